"""The GPU session (benchmarks/gpu_session.sh → benchmarks.gpu_session): the whole lease's script
rehearsed on the CPU at tiny size, and its time guard, fallbacks, plan and packing on their own.

The rehearsal runs every part (a)–(d) with the same CLI calls as the GPU run, on 64 synthetic
32×32 images with the smallest models of the same families (ResNet-8 for ResNet-20, VGG11-BN for
VGG16-BN, VGG11 for VGG16, ResNet-8×2 for ResNet-20×4). Measured 2026-12-03 on the shared 2-core
machine under load 5–9 (other sessions' tests): the rehearsal 128–183 s, everything else 9 s;
a process start-up (the probe) took 7–13 s there, so a quiet machine should need about a third.
The rehearsal is marked slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_session.sh"
MIB = 2 ** 20


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    """``benchmarks`` is a folder of the checkout, not an installed package."""
    monkeypatch.syspath_prepend(str(REPO))


def _script(args: list[str], out: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "SKIP_INSTALL": "1", "OUT": str(out),
            "OMP_NUM_THREADS": "1", "SESSION_BUDGET_S": "1500", **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=full, text=True,
                          capture_output=True, timeout=1800)


@pytest.mark.slow
def test_the_rehearsal_runs_every_part_and_writes_its_json(tmp_path):
    from weightlab import checkpoint

    out = tmp_path / "out"
    r = _script(["run", "--size", "tiny", "--device", "cpu", "--work", str(tmp_path / "w")],
                out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parts = {p: json.loads((out / f"{p}.json").read_text()) for p in "abcd"}
    assert {p: rec["status"] for p, rec in parts.items()} == dict.fromkeys("abcd", "done"), \
        {p: rec.get("reason") for p, rec in parts.items()}
    # (a) the benchmark's ratios, each measured against the plain loop in the same run
    bench = parts["a"]["result"]
    assert bench["throughput"][0]["speedup"] > 0 and bench["throughput"][0]["check"]["ok"]
    assert {"batched", "sequential"} <= set(bench["pair"][0])
    assert parts["a"]["measured_train_tflops"]["cifar_resnet8"] > 0
    # (b) trained with the batched engine (first attempt), four midpoints evaluated
    b = parts["b"]
    assert b["training"]["flags"] == ["--batched"] and b["training"]["epochs"] == 1
    assert [(m["matcher"], m["normalizer"]) for m in b["merges"]] == [
        ("identity", "none"), ("weight", "none"), ("weight", "reset_bn"), ("weight", "repair")]
    assert all(0.0 <= m["midpoint"] <= 1.0 and m["rc"] == 0 for m in b["merges"])
    assert b["merges"][-1]["command"].startswith("weightlab merge ")
    assert b["merges"][-1]["command"].endswith("--normalizer repair --json")
    assert b["target_top1"] == 0.915 and b["reached_target"] is False
    # (c) 80 % of the pruned weights are zeros, before and after the BatchNorm reset; PFM
    # with the first 2 of VGG11's conv layers preserved (the GPU run sweeps k = 0 … L−1)
    prune = parts["c"]["pruning"][0]
    assert abs(prune["sparsity"] - 0.8) < 0.01, prune["sparsity"]
    assert {"dense", "pruned", "normalized"} <= set(prune)
    pfm = parts["c"]["pfm"]
    assert pfm["status"] == "done" and [row["k"] for row in pfm["rows"]] == [2]
    assert pfm["rows"][0]["params_ratio"] > 1  # the preserved layers count twice
    assert parts["d"]["merges"][0]["normalizer"] == "repair"
    # what comes back fits the device tool: ≤ 8 files of ≤ 16 MiB; the pieces make one tar
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 * MIB for f in files), files
    pieces = sorted(out.glob("checkpoints.tar.*"), key=lambda p: int(p.suffix[1:]))
    whole = tmp_path / "checkpoints.tar"
    whole.write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(whole) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "ckpt", filter="data")
    assert names[:3] == ["b/b_resnet20/model_1.safetensors", "b/b_resnet20/model_2.safetensors",
                         "b/b_resnet20/mid-weight-repair.safetensors"]
    net, ck = checkpoint.load_model(tmp_path / "ckpt" / names[0])
    assert ck.model["name"] == "cifar_resnet8"
    log = (out / "session.log").read_text()
    assert "GPU session plan" in log and "== GPU session summary" in log


def test_unknown_parts_and_modes_are_refused(tmp_path):
    r = _script(["run", "--parts", "a,x", "--plan"], tmp_path)
    assert r.returncode == 2 and "--parts 'a,x': unknown x" in r.stdout + r.stderr
    r = _script(["srage"], tmp_path)
    assert r.returncode == 2 and "unknown mode 'srage'" in r.stderr


def _session(tmp_path, seconds_left: float):
    from benchmarks.gpu_parts import RESERVE_S, Session

    return Session(tmp_path / "out", tmp_path / "work", time.time() + RESERVE_S + seconds_left,
                   "cpu")


def test_a_command_past_the_deadline_is_stopped(tmp_path):
    from benchmarks.gpu_parts import OutOfTime

    s = _session(tmp_path, 2.0)
    t0 = time.time()
    with pytest.raises(OutOfTime, match="stopped at the session deadline"):
        s.run([sys.executable, "-c", "import time; time.sleep(60)"], "sleeper")
    assert time.time() - t0 < 15


def test_training_falls_back_to_the_next_engine_when_one_fails(tmp_path):
    from benchmarks import gpu_parts, gpu_plan

    s = _session(tmp_path, 600)
    seen = []

    def fake_cli(args, label):
        seen.append(args)
        if "--batched" in args:  # as if the vmapped engine broke on the device
            return None, {"label": label, "rc": 1, "seconds": 0.1}
        return [{"model": "m1", "test_top1": 0.5}, {"model": "m2", "test_top1": 0.6}], \
            {"label": label, "rc": 0, "seconds": 0.2}

    s.cli = fake_cli
    size = gpu_plan.size_named("tiny")
    size.b.epochs = 1
    rec: dict = {}
    assert gpu_parts.train_pair(s, size.b, size, "b", rec) == ["m1", "m2"]
    assert [c["flags"] for c in rec["train_attempts"]] == [["--batched"], ["--no-batched"]]
    assert rec["training"]["flags"] == ["--no-batched"]
    assert seen[0][:4] == ["train", "--recipe", "vf-cifar10-resnet20", "cifar_resnet8"]


def _planner(size: str = "full"):
    from benchmarks import gpu_plan

    # forward FLOPs per image (2 per multiply-accumulate), as weightlab.flopcount.count gives them
    fwd = {"cifar_resnet20": 81.63e6, "cifar_vgg16_bn": 626.4e6, "cifar_vgg16": 626.4e6,
           "cifar_resnet20_4x": 1295.4e6}
    return gpu_plan.Planner(gpu_plan.size_named(size), 989e12, 5.0, flops=fwd.__getitem__)


def test_the_plan_fits_epochs_to_the_time_left_and_skips_what_cannot_fit():
    p = _planner()
    # ResNet-20 at an assumed 0.5 % of 989 TFLOP/s: one pair epoch is 2 × 3 × 81.63 MFLOP ×
    # 50,000 images ÷ 4.945 TFLOP/s = 4.95 s
    assert p.per_epoch(p.size.b) == pytest.approx(2 * 3 * 81.63e6 * 50000 / (0.005 * 989e12))
    full = p.allot("b", 10_000)
    assert full.epochs == 50  # the target, when time is plentiful
    short = p.allot("b", 150)
    assert 15 <= short.epochs < 50 and short.seconds <= 150
    assert p.allot("b", 60) is None  # not even the 15-epoch minimum
    # leaving part (c) its minimum (8 VGG16-BN epochs) shortens (b) when both cannot be whole
    budget = p.estimate("b", 50).seconds + p.estimate("c", 8).seconds - 10
    alone, shared = p.allot("b", budget), p.allot("b", budget, then="c")
    assert alone.epochs == 50 and 15 <= shared.epochs < 50
    assert budget - shared.seconds >= p.estimate("c", 8).seconds


def test_the_plan_takes_the_rates_part_a_measured():
    p = _planner()
    guess = p.per_epoch(p.size.b)
    # a pair step of 2 × 128 images in 20 steps taking 0.5 s: 10,240 images/s in all
    bench = {"throughput": [{"model": "cifar_resnet20", "steps": 20}],
             "pair": [{"model": "cifar_resnet20", "batch": 128,
                       "batched": {"pair_seconds": 0.5}}]}
    p.learn(bench)
    assert p.rate("cifar_resnet20")[0] == pytest.approx(3 * 81.63e6 * 2 * 128 * 20 / 0.5)
    assert p.per_epoch(p.size.b) == pytest.approx(2 * 50000 / (2 * 128 * 20 / 0.5))
    assert p.per_epoch(p.size.b) != guess
    assert "measured" in p.rate("cifar_vgg16")[1]  # no VGG figure: ResNet-20's stands in


def test_checkpoints_are_packed_in_pieces_within_the_limits(tmp_path, monkeypatch):
    from benchmarks import gpu_session

    monkeypatch.setattr(gpu_session, "OUT_FILE_LIMIT", 16384)  # room: 3 × 16 KiB − 16 KiB
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    files = {}
    for name, n in (("b1", 3000), ("b2", 3000), ("c1", 30000), ("d1", 2000)):
        files[name] = work / name / "model.safetensors"
        files[name].parent.mkdir()
        files[name].write_bytes(os.urandom(n))
    (out / "checkpoints.tar.7").write_bytes(b"stale")
    records = {"b": {"checkpoints": [str(files["b1"]), str(files["b2"])]},
               "c": {"checkpoints": [str(files["c1"])]},
               "d": {"checkpoints": [str(files["d1"]), str(work / "missing.safetensors")]}}
    res = gpu_session.pack_checkpoints(out, work, records)
    # b first, then d, then c: c's 30 kB does not fit in what is left (32 KiB − 10 kB)
    assert res["files"] == ["b/b1/model.safetensors", "b/b2/model.safetensors",
                            "d/d1/model.safetensors"]
    assert len(res["left_out"]) == 1 and "c1" in res["left_out"][0]
    pieces = sorted(out.glob("checkpoints.tar.*"), key=lambda p: int(p.suffix[1:]))
    assert [p.name for p in pieces] == res["pieces"] == ["checkpoints.tar.0", "checkpoints.tar.1"]
    assert all(p.stat().st_size <= 16384 for p in pieces)
    whole = tmp_path / "whole.tar"
    whole.write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(whole) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert got == {"b/b1/model.safetensors": files["b1"].read_bytes(),
                   "b/b2/model.safetensors": files["b2"].read_bytes(),
                   "d/d1/model.safetensors": files["d1"].read_bytes()}
