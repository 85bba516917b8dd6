"""The real engines on this machine: a private Ray head (127.0.0.1, 2 CPUs, started and stopped
here), submitit's local executor and local worker processes run the same steps as this process
and write the same results; a worker killed with SIGKILL mid-step is retried (or reported) and
nothing already written is lost.

The graph: train two digits MLPs (seeds 0 and 1, 2 epochs) side by side, then evaluate both and
their uniform average. Measured in process: test top-1 ≈ 0.90 and 0.91, average ≈ 0.5 (naive
merging of two independently trained MLPs collapses). Identity is checked on the SHA-256 of
every checkpoint's tensors and on the evaluation record, not on a tolerance.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from weightlab import testing
from weightlab.executors import GraphFailed, run_graph
from weightlab.executors.local import LocalExecutor

pytestmark = pytest.mark.slow
EPOCHS = 2


def _graph(rd: Path) -> tuple[list[dict], dict]:
    def train(name, seed):
        return {"id": f"train_{name}", "call": "weightlab.executors.tasks:train",
                "kwargs": {"model": "mlp", "data": "digits", "out_dir": str(rd / name),
                           "epochs": EPOCHS, "seed": seed},
                "out": f"steps/train_{name}.json", "resources": {"cpus": 1}}

    evaluate = {"id": "evaluate", "call": "weightlab.executors.tasks:evaluate_average",
                "kwargs": {"checkpoints": [str(rd / n / "model_1.safetensors") for n in "ab"],
                           "data": "digits"},
                "out": "steps/evaluate.json", "resources": {"cpus": 1}}
    return [train("a", 0), train("b", 1), evaluate], {"evaluate": ["train_a", "train_b"]}


def _outcome(results: dict) -> dict:
    """What must not depend on the executor: tensors' digests and all metrics."""
    return {"a": results["train_a"]["result"]["sha256"],
            "b": results["train_b"]["result"]["sha256"],
            "test_a": results["train_a"]["result"]["test"],
            "evaluate": results["evaluate"]["result"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    rd = tmp_path_factory.mktemp("reference")
    out = _outcome(run_graph(*_graph(rd), run_dir=rd, log=lambda m: None))
    assert out["evaluate"]["models"][0]["top1"] == out["test_a"]["top1"]
    assert out["evaluate"]["average"]["top1"] < min(m["top1"] for m in
                                                    out["evaluate"]["models"])
    return out


@pytest.fixture(scope="module")
def ray_address():
    pytest.importorskip("ray")
    from weightlab.executors.cluster import local_ray_head

    with local_ray_head(num_cpus=2) as address:
        yield address


def _kill_when_started(marker: Path, timeout: float = 120.0) -> threading.Thread:
    """SIGKILL the process named in ``marker`` (the step's .running file) once it appears."""
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = json.loads(marker.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)
                continue
            os.kill(pid, signal.SIGKILL)
            return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_submitit_local_runs_a_pruning_sweep_like_this_process(tmp_path):
    """global_magnitude at 0.5 and 0.95 on the 4-epoch digits MLP, one submitit job each."""
    pytest.importorskip("submitit")
    from weightlab import pruning_fanout
    from weightlab_slurm.executor import SlurmExecutor

    dense = testing.trained("mlp", "digits", models=1, epochs=4, train={"lr": 0.05},
                            model_params={"width": 64, "depth": 2})[0]
    sparsities = [0.5, 0.95]
    here = pruning_fanout.sweep(dense, "global_magnitude", sparsities, tmp_path / "here",
                                log=lambda m: None)
    with SlurmExecutor(cluster="local", poll=0.1) as ex:
        there = pruning_fanout.sweep(dense, "global_magnitude", sparsities, tmp_path / "there",
                                     ex, log=lambda m: None)
    assert [r["sha256"] for r in there] == [r["sha256"] for r in here]
    assert [r["pruned"] for r in there] == [r["pruned"] for r in here]
    assert len(list((tmp_path / "there/.submitit").glob("*_result.pkl"))) == 2  # 2 jobs ran
    assert here[0]["pruned"]["top1"] > here[1]["pruned"]["top1"]


def test_a_killed_local_worker_is_retried_or_reported_and_nothing_written_is_lost(
        reference, tmp_path):
    specs, deps = _graph(tmp_path)
    with LocalExecutor(workers=2) as ex:
        killer = _kill_when_started(tmp_path / "steps/train_b.json.running")
        with pytest.raises(GraphFailed) as info:
            run_graph(specs, deps, ex, tmp_path, retries=0, log=lambda m: None)
        killer.join(1)
    err = info.value
    assert list(err.failed) == ["train_b"] and err.blocked == ["evaluate"]
    assert "killed by signal 9" in err.failed["train_b"]
    kept = (tmp_path / "steps/train_a.json").read_bytes()
    logs: list[str] = []
    # the rerun (in this process): train_a is kept, train_b runs again
    res = run_graph(specs, deps, run_dir=tmp_path, log=logs.append)
    assert logs[0] == "train_a: finished earlier, not redone"
    assert "stopped without finishing it; running it again" in logs[1]
    assert (tmp_path / "steps/train_a.json").read_bytes() == kept
    assert res["train_b"]["attempt"] == 2 and _outcome(res) == reference


def test_ray_runs_the_graph_like_this_process_and_retries_a_killed_worker(
        ray_address, reference, tmp_path):
    from weightlab_ray.executor import RayExecutor

    specs, deps = _graph(tmp_path)
    logs: list[str] = []
    with RayExecutor(address=ray_address) as ex:
        killer = _kill_when_started(tmp_path / "steps/train_b.json.running")
        res = run_graph(specs, deps, ex, tmp_path, retries=1, log=logs.append)
        killer.join(1)
    assert any("its worker stopped without finishing" in m and "attempt 2 of 2" in m
               for m in logs), logs
    assert res["train_a"]["attempt"] == 1 and res["train_b"]["attempt"] == 2
    assert _outcome(res) == reference


def test_sms_phase_ingredients_on_ray_equal_the_in_process_run(ray_address, tmp_path):
    """One SMS phase on a digits MLP (goal 0.5, 2 ingredients × 1 epoch, CLR): the ingredients
    and the soup trained on Ray are bit-identical to the in-process run (one torch thread in
    both: with 2 threads the same training differs in the last bits)."""
    from weightlab import checkpoint as ckpt_io
    from weightlab_ray.executor import RayExecutor
    from weightlab_sparse_soup.sms import Pipeline, make_params

    dense = testing.trained("mlp", "digits", models=1, epochs=4, train={"lr": 0.05},
                            model_params={"width": 64, "depth": 2})[0]
    params = make_params({"goal_sparsity": 0.5, "phases": 1, "ingredients": 2,
                          "retrain_epochs": 1, "schedule": "CLR", "imp": False,
                          "bn_samples": 200})
    Pipeline(dense, params, tmp_path / "local", threads=1, log=lambda m: None).run()
    with RayExecutor(address=ray_address) as ex:
        Pipeline(dense, params, tmp_path / "ray", executor=ex, threads=1,
                 log=lambda m: None).run()
    for f in ("ingredient_1/model_1.safetensors", "ingredient_2/model_1.safetensors",
              "soup.safetensors"):
        a, b = (ckpt_io.read_header(tmp_path / r / "phase_1" / f) for r in ("local", "ray"))
        assert a["sha256"] == b["sha256"], f
    assert (tmp_path / "ray/phase_1/ingredient_2/step.json").is_file()


RECIPE = """\
title = "two independent pairs, merged"

[[step]]
name = "pair_a"
do = "train"
model = "mlp"
data = "digits"
pair = true
epochs = 2
seed = 0
param = { width = 32, depth = 2 }

[[step]]
name = "pair_b"
do = "train"
model = "mlp"
data = "digits"
pair = true
epochs = 2
seed = 10
param = { width = 32, depth = 2 }

[[step]]
name = "merge_a"
do = "merge"
checkpoints = ["${pair_a.model_1}", "${pair_a.model_2}"]
matcher = "weight"

[[step]]
name = "merge_b"
do = "merge"
checkpoints = ["${pair_b.model_1}", "${pair_b.model_2}"]
matcher = "weight"

[[report]]
title = "midpoints"
each = ["merge_a", "merge_b"]
columns = ["step", "midpoint"]
row = ["${each.name}", "${each.result.evaluation.-1.top1}"]
"""


def test_a_recipe_on_ray_gives_the_report_of_the_run_here(ray_address, tmp_path):
    """Two independent train → merge chains (digits MLPs, 2 epochs): run on the Ray head
    (references resolved as their steps finish; each pair's two models trained as two member
    tasks) the report and every checkpoint's tensors equal the run in this process, where
    each pair trains side by side (the executor started early, its warm-up tasks queued
    ahead of the steps); a second run on Ray reuses every step."""
    from weightlab import checkpoint as ckpt_io
    from weightlab.recipes import Runner, load
    from weightlab_ray.executor import RayExecutor

    path = tmp_path / "pairs.toml"
    path.write_text(RECIPE)
    here = Runner(load(path), tmp_path / "here", echo=lambda m: None).run()
    with RayExecutor(address=ray_address) as ex:
        ex.start()  # as `weightlab run` does: connect and warm the workers in the background
        there = Runner(load(path), tmp_path / "ray", echo=lambda m: None, executor=ex).run()
        again = Runner(load(path), tmp_path / "ray", echo=lambda m: None, executor=ex).run()
    assert there["reports"][0]["rows"] == here["reports"][0]["rows"]
    for step in ("pair_a", "pair_b"):
        for k in (1, 2):
            a, b = (ckpt_io.read_header(tmp_path / r / step / f"model_{k}.safetensors")
                    for r in ("here", "ray"))
            assert a["sha256"] == b["sha256"], (step, k)
            assert (tmp_path / "ray" / step / "steps" / f"model_{k}.json").is_file()
    assert all(s["ran"] for s in there["steps"]) and not any(s["ran"] for s in again["steps"])


def test_submitit_local_trains_a_pair_as_two_jobs_like_this_process(tmp_path):
    """``weightlab.train(pair=True, executor=slurm)``: each model one submitit job (the run's
    model k alone, ``member=k``); both checkpoints' tensors equal the pair trained side by
    side in this process (digits MLP 32×2, 2 epochs)."""
    pytest.importorskip("submitit")
    import weightlab
    from weightlab.checkpoint_header import read_header
    from weightlab_slurm.executor import SlurmExecutor

    kw = dict(model="mlp", data="digits", pair=True, epochs=2, batch_size=64, lr=0.05,
              model_param={"width": 32, "depth": 2})
    weightlab.train(out=tmp_path / "here", **kw)
    with SlurmExecutor(cluster="local", poll=0.1) as ex:
        weightlab.train(out=tmp_path / "there", executor=ex, **kw)
    for k in (1, 2):
        a, b = (read_header(tmp_path / r / f"model_{k}.safetensors")["sha256"]
                for r in ("here", "there"))
        assert a == b, k
    assert len(list((tmp_path / "there/.submitit").glob("*_result.pkl"))) == 2  # 2 jobs ran
