"""Step specs, run_graph and the built-in local executor (in process): bad specs and graphs are
one-line errors; a failing step blocks only its dependents; a rerun redoes exactly what is not
finished; a pruning sweep as steps equals the in-process sweep."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from weightlab import checkpoint as ckpt_io
from weightlab import testing
from weightlab.errors import UsageError
from weightlab.executors import GraphFailed, run_graph, spec_hash
from weightlab.executors.spec import check_spec


def _eval_spec(sid, ckpts):
    return {"id": sid, "call": "weightlab.executors.tasks:evaluate_average",
            "kwargs": {"checkpoints": [str(c) for c in ckpts], "data": "digits"},
            "out": f"steps/{sid}.json"}


def _top1_by_hand(path) -> float:
    """Independent re-statement: argmax of the logits over the digits test split."""
    from weightlab.data.bundle import load_data

    net, _ = ckpt_io.load_model(path)
    bundle = load_data("digits")
    xs, ys = zip(*bundle.loader("test", batch_size=10_000), strict=True)
    with torch.no_grad():
        y = torch.cat(ys)
        return int((net(torch.cat(xs)).argmax(1) == y).sum()) / len(y)


def test_bad_specs_and_graphs_are_one_line_errors(tmp_path):
    good = _eval_spec("a", ["x.safetensors"])
    with pytest.raises(UsageError, match=r"call='nomodule' is not 'module:function'"):
        check_spec({**good, "call": "nomodule"})
    with pytest.raises(UsageError, match=r"out='\.\./x.json' must be a path inside"):
        check_spec({**good, "out": "../x.json"})
    with pytest.raises(UsageError, match=r"unknown field\(s\) retries"):
        check_spec({**good, "retries": 2})
    with pytest.raises(UsageError, match=r"resources.gpus=-1"):
        check_spec({**good, "resources": {"gpus": -1}})
    b = {**good, "id": "b", "out": "steps/b.json"}
    with pytest.raises(UsageError, match=r"steps a, b depend on each other"):
        run_graph([good, b], {"a": ["b"], "b": ["a"]}, run_dir=tmp_path)
    with pytest.raises(UsageError, match=r"step 'a' depends on 'c', which is not a step"):
        run_graph([good, b], {"a": ["c"]}, run_dir=tmp_path)
    with pytest.raises(UsageError, match=r"write the same out='steps/a.json'"):
        run_graph([good, {**good, "id": "b"}], run_dir=tmp_path)
    # what a step computes is hashed, where it runs is not
    assert spec_hash(good) == spec_hash({**good, "resources": {"cpus": 2}})
    assert spec_hash(good) != spec_hash({**good, "kwargs": {**good["kwargs"], "data": "mnist"}})


def test_a_failed_step_blocks_its_dependents_only_and_a_rerun_continues(tmp_path, digits_ckpt):
    """Random-init MLP on the digits test split: top-1 ≈ 0.1 (chance); the stored result must
    equal an argmax count by hand exactly."""
    missing = tmp_path / "later.safetensors"
    specs = [_eval_spec("good", [digits_ckpt]), _eval_spec("bad", [missing]),
             _eval_spec("after_bad", [digits_ckpt, digits_ckpt])]
    logs: list[str] = []
    with pytest.raises(GraphFailed) as info:
        run_graph(specs, {"after_bad": ["bad"]}, run_dir=tmp_path / "run", log=logs.append)
    err = info.value
    assert set(err.results) == {"good"} and list(err.failed) == ["bad"]
    assert err.blocked == ["after_bad"] and "no such checkpoint" in err.failed["bad"]
    assert "not started: after_bad" in str(err) and "run again to continue" in str(err)
    stored = json.loads((tmp_path / "run/steps/bad.json.error.json").read_text())
    assert stored["error"].startswith("CheckpointError")
    good = tmp_path / "run/steps/good.json"
    before = good.read_bytes()
    assert json.loads(before)["result"]["average"]["top1"] == _top1_by_hand(digits_ckpt)

    shutil.copy(digits_ckpt, missing)  # fix the cause; the rerun does only what is left
    logs.clear()
    res = run_graph(specs, {"after_bad": ["bad"]}, run_dir=tmp_path / "run", log=logs.append)
    assert logs == ["good: finished earlier, not redone"]
    assert good.read_bytes() == before
    assert not (tmp_path / "run/steps/bad.json.error.json").exists()
    assert res["after_bad"]["result"]["average"] == res["good"]["result"]["average"]


def test_a_changed_spec_is_recomputed(tmp_path, digits_ckpt):
    spec = _eval_spec("e", [digits_ckpt])
    first = run_graph([spec], run_dir=tmp_path, log=lambda m: None)["e"]
    again = run_graph([{**spec, "resources": {"cpus": 1}}], run_dir=tmp_path,
                      log=lambda m: None)["e"]
    assert again == first  # placement changed only: not redone
    changed = {**spec, "kwargs": {**spec["kwargs"], "checkpoints": [str(digits_ckpt)] * 2}}
    third = run_graph([changed], run_dir=tmp_path, log=lambda m: None)["e"]
    assert third["spec_hash"] != first["spec_hash"]


def test_a_pruning_sweep_as_steps_equals_the_in_process_sweep(tmp_path):
    """Magnitude pruning of a digits MLP (4 epochs, test top-1 ≈ 0.95) at 0.5 and 0.9: masks,
    weights and pruned accuracies of the step sweep equal pruning.sweep's exactly."""
    from weightlab import plugins, pruning, pruning_fanout
    from weightlab.data.bundle import load_data

    path = testing.trained("mlp", "digits", models=1, epochs=4, train={"lr": 0.05},
                           model_params={"width": 64, "depth": 2})[0]
    records = pruning_fanout.sweep(path, "magnitude", [0.5, 0.9], tmp_path / "sweep",
                                   log=lambda m: None)
    dense, ck = ckpt_io.load_model(path)
    test = load_data("digits").loader("test", batch_size=500)
    pruner = plugins.registry().create("pruners", "magnitude")
    models = {}
    ref = pruning.sweep(dense, pruner, [0.5, 0.9], masks=ck.masks, evaluate_on=test,
                        on_result=lambda s, m, masks, r: models.setdefault(s, (m, masks)))
    for s, rec, want in zip((0.5, 0.9), records, ref, strict=True):
        assert rec["pruned"] == want["pruned"] and rec["sparsity"] == pytest.approx(s, abs=1e-3)
        out = ckpt_io.load(tmp_path / "sweep" / f"sparsity-{s:g}.safetensors")
        model, masks = models[s]
        assert all(torch.equal(out.state[k], v) for k, v in model.state_dict().items())
        assert all(torch.equal(out.masks[k], m) for k, m in masks.items())
    assert ref[1]["pruned"]["top1"] < ref[0]["pruned"]["top1"]


def test_an_error_in_on_done_propagates_and_is_not_a_step_failure(tmp_path, digits_ckpt):
    """A caller's callback (a progress hook, an interruption) is not the step's error: it is
    raised as is, never retried as a lost worker, and the step's result stays on disk."""
    class Stop(Exception):
        pass

    def stop(sid, record):
        raise Stop(sid)

    logs: list[str] = []
    with pytest.raises(Stop, match="e"):
        run_graph([_eval_spec("e", [digits_ckpt])], run_dir=tmp_path, on_done=stop,
                  log=logs.append)
    assert logs == [] and (tmp_path / "steps/e.json").is_file()


def test_local_workers_share_the_cores_unless_told(tmp_path):
    """Each local worker process runs torch with its share of the machine's cores (cores //
    workers, at least 1), or the executor's ``threads``; a step's ``resources.cpus`` wins.
    Read back by a step calling ``torch.get_num_threads`` in the worker."""
    import os

    from weightlab.executors.local import LocalExecutor

    def spec(name, **extra):
        return {"id": name, "call": "torch:get_num_threads", "kwargs": {},
                "out": f"{name}.json", **extra}

    share = max(1, (os.cpu_count() or 1) // 2)
    with LocalExecutor(workers=2) as ex:
        res = run_graph([spec("default"), spec("one", resources={"cpus": 1})], {}, ex,
                        tmp_path, log=lambda m: None)
    assert res["default"]["result"] == share and res["one"]["result"] == 1
    with LocalExecutor(workers=2, threads=2) as ex:  # torch caps threads at the cores
        res = run_graph([spec("two")], {}, ex, tmp_path, log=lambda m: None)
    assert res["two"]["result"] == min(2, os.cpu_count() or 1)
