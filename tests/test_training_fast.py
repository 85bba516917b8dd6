"""The fast trainer: it computes what a plain PyTorch loop computes; K models trained together
(one vmapped step) equal K solo runs; a resumed pair ends bit-identical to an uninterrupted
one; LMC is measured at the requested fractions of training; recipes are validated data."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from weightlab import testing
from weightlab.data.bundle import load_data
from weightlab.params import build_params
from weightlab.training.config import SpeedOptions, TrainConfig
from weightlab.training.logging import read_jsonl
from weightlab.training.loop import RESUME_FILE, TrainJob, build_models, train
from weightlab.training.schedules import lr_factor

MLP = {"depth": 2, "width": 64}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def synthetic():
    return load_data("synthetic", params={"n_train": 192, "n_test": 64, "size": 16})


def _job(data, run_dir, model="mlp", params=MLP, k=1, batched="auto", **cfg):
    values = {"epochs": 2, "batch_size": 64, "lr": 0.05, "seed": 0, **cfg}
    return TrainJob(model, dict(params), data, build_params(TrainConfig, values), run_dir,
                    num_models=k, speed=SpeedOptions(batched=batched))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _engines(run_dir) -> set[str]:
    return {r["engine"] for r in read_jsonl(run_dir / "metrics.jsonl") if "engine" in r}


def test_trainer_computes_what_a_plain_loop_computes(digits, tmp_path):
    """Same recipe, same result: weightlab's step (foreach SGD, device-side metrics, loss as
    Σ CE / B) against torch.optim.SGD's default loop with F.cross_entropy's mean, on the same
    batches. measured: identical weights (max difference 0) after 46 steps."""
    job = _job(digits, tmp_path, schedule="cosine", weight_decay=5e-4, nesterov=True)
    (ck,) = train(job, progress=False)
    (net,) = build_models(job)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    loader = digits.loader("train", batch_size=64, shuffle=True, augment=True, seed=0)
    total = 2 * len(loader)
    it = 0
    for epoch in range(2):
        loader.set_epoch(epoch)
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = 0.05 * lr_factor(job.cfg, it, total)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
    assert _max_diff(ck.state, net.state_dict()) < 1e-6


@pytest.mark.parametrize("model, data, params, tol", [
    # measured: max |Δ| 6.0e-8 (weights up to 0.29) after 46 steps
    ("mlp", "digits", MLP, 1e-6),
    # measured: max |Δ| 4.3e-5 over weights and BN running statistics after 6 steps. One step
    # agrees to 1.5e-8 (test below); later steps amplify rounding when a ReLU gate flips
    ("cifar_resnet8", "synthetic", {}, 5e-4),
])
def test_pair_trained_together_equals_two_solo_runs(model, data, params, tol, tmp_path,
                                                    request):
    bundle = request.getfixturevalue(data)
    cfg = {"lr": 0.02} if data == "synthetic" else {}
    pair = train(_job(bundle, tmp_path / "pair", model, params, k=2, batched="on", **cfg),
                 progress=False)
    assert _engines(tmp_path / "pair") == {"batched"}
    solo = [train(_job(bundle, tmp_path / f"solo{s}", model, params, seed=s, **cfg),
                  progress=False)[0] for s in (0, 1)]
    assert _engines(tmp_path / "solo0") == {"sequential"}
    assert _max_diff(pair[0].state, pair[1].state) > 1e-2  # two different models
    for together, alone in zip(pair, solo):
        assert _max_diff(together.state, alone.state) < tol
        assert together.metrics["test"]["top1"] == pytest.approx(alone.metrics["test"]["top1"])


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap fallback, LayerNorm
@pytest.mark.parametrize("model, shape", [("mlp", (1, 8, 8)), ("cifar_resnet8", (3, 32, 32)),
                                          ("cifar_resnet8_ln", (3, 32, 32))])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_one_batched_step_is_k_solo_steps(model, shape, optimizer):
    """Two steps (the second uses the first's optimizer state: SGD momentum, Adam's moments
    and step count). measured (SGD): max |Δ| 1.2e-7 over parameters and BN statistics, 4.8e-7
    over momentum buffers (ResNet-8-LN; MLP 9e-9). Adam's m/√v turns fp32 rounding of
    near-zero gradients into steps of up to ±lr (MLP, fp32: 1.0e-5 at lr 1e-3), so Adam is
    compared in float64, where it agrees to 8.8e-15."""
    from weightlab.training.distributed import DistInfo
    from weightlab.training.engines import BatchedEngine, SequentialEngine

    cfg = TrainConfig(lr=0.05 if optimizer == "sgd" else 1e-3, nesterov=True,
                      optimizer=optimizer)
    cpu = torch.device("cpu")

    dt = torch.float32 if optimizer == "sgd" else torch.float64

    def nets():
        return [testing.tiny_model(model, input_shape=shape, seed=s).to(dt) for s in (0, 1)]

    gen = torch.Generator().manual_seed(0)
    # one memory format on both sides: channels_last convolutions round differently (fp32
    # gradients of these freshly initialised nets differ from float64 by up to 0.9% either
    # way), which would hide what is compared here
    speed = SpeedOptions(channels_last="off")
    together = BatchedEngine(nets(), cfg, speed, cpu, DistInfo(), {})
    alone = SequentialEngine(nets(), cfg, speed, cpu, DistInfo(), {})
    for _ in range(2):  # the second step uses the momentum buffers of the first
        batches = [(torch.randn(16, *shape, generator=gen).to(dt),
                    torch.randint(0, 10, (16,), generator=gen)) for _ in range(2)]
        together.step(batches, 0.05, 1 / 16)
        alone.step(batches, 0.05, 1 / 16)
    for a, b in zip(together.models, alone.models):
        assert _max_diff(a.state_dict(), b.state_dict()) < 1e-6
    for a, b in zip(together.momentum_state(), alone.momentum_state()):
        flat_a = {f"{n}/{k}": v for n, e in a.items() for k, v in e.items()}
        flat_b = {f"{n}/{k}": v for n, e in b.items() for k, v in e.items()}
        assert flat_a and _max_diff(flat_a, flat_b) < 1e-6
        if optimizer != "sgd":
            assert {k.rsplit("/", 1)[1] for k in flat_a} == {"exp_avg", "exp_avg_sq", "step"}
    assert torch.allclose(together.sums, alone.sums, rtol=1e-6)


class Interrupted(Exception):
    pass


def test_resumed_batched_pair_is_bit_identical(tmp_path):
    """ResNet-8 (BatchNorm) pair with crop/flip augmentation and lr steps inside the run: the
    resume state restores weights, running statistics, momentum buffers, the iteration and
    the data order."""
    bundle = load_data("synthetic", params={"n_train": 128, "n_test": 64, "size": 16})
    bundle.dataset.augment = "crop_flip"  # CIFAR's augmentation on small synthetic images

    def job(name):
        return _job(bundle, tmp_path / name, "cifar_resnet8", {}, k=2, epochs=3,
                    milestones=[3, 5], batched="on")

    full = train(job("full"), progress=False)

    def stop(epoch, nets):
        if epoch == 2:
            raise Interrupted

    cut = job("cut")
    with pytest.raises(Interrupted):
        train(cut, progress=False, on_epoch=stop)
    assert torch.load(cut.run_dir / RESUME_FILE, weights_only=True)["iter"] == 2
    resumed = train(cut, resume=True, progress=False)
    assert _engines(cut.run_dir) == {"batched"}
    for a, b in zip(full, resumed):
        for k in a.state:
            assert torch.equal(a.state[k], b.state[k]), k
    epochs = [(r["epoch"], r["model"]) for r in read_jsonl(cut.run_dir / "metrics.jsonl")]
    assert epochs == [(e, m) for e in (1, 2, 3) for m in (1, 2)]


def test_lmc_during_training_logs_barrier_curves(digits, tmp_path, cli):
    """Two MLPs from different inits, LMC at 0, ¼, ½, ¾ and all of training, with and without
    weight matching. measured: final test top-1 93.6% / 93.9%; test accuracy barrier at the end
    8.2% naive, 0.14% after weight matching (logged); at init the endpoints are at chance
    (11.4% / 4.4%)."""
    out = tmp_path / "run"
    args = ["train", "mlp", "--data", "digits", "--pair", "--epochs", "4", "--batch-size", "64",
            "--lr", "0.05", "--schedule", "constant", "-p", "width=64", "-p", "depth=2",
            "--out", out, "--lmc-freq", "0.25", "--lmc-points", "5",
            "--lmc-param", "train_samples=500"]
    code, stdout, err = cli(*args, "--lmc-matcher", "weight", "--json")
    assert code == 0, err
    res = json.loads(stdout)
    records = [r for r in read_jsonl(out / "metrics.jsonl") if "lmc" in r]
    total = 4 * math.ceil(1437 / 64)
    assert [r["lmc"]["fraction"] for r in records] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [r["iter"] for r in records] == [round(f * total) for f in (0, .25, .5, .75, 1)]
    assert [row["fraction"] for row in res["lmc"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    end = records[-1]["lmc"]
    for split in ("train", "test"):
        loss, acc = end[split]["loss"], end[split]["top1"]
        assert len(loss) == len(acc) == 5 and end["alpha"] == [0, .25, .5, .75, 1]
        assert end[split]["loss_barrier"] == pytest.approx(max(loss) - (loss[0] + loss[-1]) / 2)
        assert end[split]["acc_barrier"] == pytest.approx((acc[0] + acc[-1]) / 2 - min(acc))
    # the curve's endpoints are the trained models themselves
    finals = {r["model"]: r["test_top1"] for r in read_jsonl(out / "metrics.jsonl")
              if r.get("epoch") == 4 and "model" in r}
    assert end["test"]["top1"][0] == pytest.approx(finals[1])
    assert end["test"]["top1"][-1] == pytest.approx(finals[2])
    assert max(records[0]["lmc"]["test"]["top1"][0], records[0]["lmc"]["test"]["top1"][-1]) < 0.3
    assert min(finals.values()) > 0.9

    from weightlab import checkpoint as ckpt_io
    from weightlab.interpolation import curve

    a, _ = ckpt_io.load_model(out / "model_1.safetensors")
    b, _ = ckpt_io.load_model(out / "model_2.safetensors")
    naive = curve(a, b, {"test": digits.loader("test")}, end["alpha"])
    assert naive["test"]["acc_barrier"] > end["test"]["acc_barrier"] + 0.03


def test_wandb_gets_every_scalar_of_a_record():
    from weightlab.training.logging import scalars

    epoch = {"epoch": 2, "iter": 46, "model": 2, "lr": 0.1, "train_loss": 0.5, "engine": "x"}
    assert scalars(epoch) == {"epoch": 2, "iter": 46, "model": 2, "lr": 0.1,
                              "model2/train_loss": 0.5}
    lmc = {"iter": 46, "lmc": {"fraction": 0.5, "alpha": [0, 1], "test": {
        "loss": [1.0, 2.0], "loss_barrier": 0.3, "acc_barrier": 0.1}}}
    assert scalars(lmc) == {"iter": 46, "lmc/fraction": 0.5, "lmc/test/loss_barrier": 0.3,
                            "lmc/test/acc_barrier": 0.1}


def test_warmup_epochs_ramp_over_the_first_epoch():
    cfg = build_params(TrainConfig, {"epochs": 4, "warmup_epochs": 1, "schedule": "multistep",
                                     "milestones": [30]})
    total = 4 * 10
    lrs = [lr_factor(cfg, it, total) for it in range(total)]
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10:30] == [1.0] * 20 and lrs[30:] == pytest.approx([0.1] * 10)


def test_loader_shards_cover_the_global_batch(digits):
    """Data-parallel ranks see disjoint, contiguous parts of each global batch, uneven last
    batch included, with the pixels single-process training would see."""
    whole = digits.loader("train", batch_size=64, shuffle=True, seed=3)
    parts = []
    for rank in range(3):
        ld = digits.loader("train", batch_size=64, shuffle=True, seed=3)
        ld.set_shard(rank, 3)
        parts.append(list(ld))
    for i, (x, y) in enumerate(whole):
        xs = torch.cat([p[i][0] for p in parts])
        assert torch.equal(xs, x) and torch.equal(torch.cat([p[i][1] for p in parts]), y)
    assert [len(p[-1][1]) for p in parts] == [10, 10, 9]  # 1437 = 22·64 + 29


def test_recipe_from_a_path_with_flags_overriding(tmp_path, cli):
    from weightlab import checkpoint as ckpt_io

    path = tmp_path / "tiny.toml"
    path.write_text('model = "mlp"\ndata = "digits"\nmodels = 1\n[model_params]\nwidth = 32\n'
                    '[train]\nepochs = 5\nbatch_size = 128\nlr = 0.05\nwarmup_epochs = 1\n')
    code, _, err = cli("train", "--recipe", path, "--epochs", "1", "--out", tmp_path / "r")
    assert code == 0, err
    ck = ckpt_io.load(tmp_path / "r" / "model_1.safetensors")
    assert ck.train["epochs"] == 1 and ck.train["batch_size"] == 128  # flag beats recipe
    assert ck.train["warmup_epochs"] == 1 and ck.model["params"]["width"] == 32
    path.write_text('model = "mlp"\n[train]\nlr = 0.1\nmomentun = 0.5\n')
    code, _, err = cli("train", "--recipe", path, "--out", tmp_path / "bad")
    assert code == 2 and str(path) in err and "train.momentun" in err
    assert "did you mean 'momentum'" in err and len(err.strip().splitlines()) == 1
    path.write_text('model = "mlp"\nepochs = 3\n')
    code, _, err = cli("train", "--recipe", path, "--out", tmp_path / "bad")
    assert code == 2 and f"{path}: epochs: unknown recipe field" in err
    code, _, err = cli("train", "--recipe", "vf-cifar10-resnet2", "--out", tmp_path / "bad")
    assert code == 2 and "did you mean vf-cifar10-resnet20" in err
    assert not (tmp_path / "bad").exists()


def test_fast_path_keeps_the_accuracy(digits, tmp_path):
    """bf16 autocast + channels_last, K=2 in one batched step (on CUDA also fused SGD and CUDA
    graphs) against the plain fp32 sequential step, ResNet-8 on digits for 3 epochs.
    measured on the CPU: test top-1 97.8% / 98.6% (bf16) vs 98.3% / 98.6% (fp32)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_data("digits", device=dev)
    fast_speed = SpeedOptions(amp="on", channels_last="on", batched="on",
                              cuda_graphs=dev == "cuda")
    plain_speed = SpeedOptions(amp="off", channels_last="off", batched="off")
    runs = {}
    for name, speed in (("fast", fast_speed), ("plain", plain_speed)):
        job = _job(data, tmp_path / name, "cifar_resnet8", {}, k=2, epochs=3)
        job.device, job.speed = dev, speed
        runs[name] = train(job, progress=False)
    assert _engines(tmp_path / "fast") == {"batched"}
    for f, p in zip(runs["fast"], runs["plain"]):
        assert f.metrics["test"]["top1"] > 0.95
        assert abs(f.metrics["test"]["top1"] - p.metrics["test"]["top1"]) < 0.03
        assert all(v.dtype == p.state[k].dtype for k, v in f.state.items())  # fp32 weights


def test_every_training_benchmark_runs_at_a_tiny_size(tmp_path):
    """``python -m benchmarks.bench_training --tiny``: throughput, pair efficiency and time to
    accuracy each run after their correctness checks (no timing is asserted)."""
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_training", "--tiny",
                           "--threads", "1", "--out", str(out)], cwd=testing.REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [(r["model"], r["batch"]) for r in res["throughput"]] == [("cifar_resnet8", 16),
                                                                      ("mlp", 16)]
    for r in res["throughput"]:
        assert r["check"]["ok"] and r["check"]["max_abs_weight_diff"] < 1e-5
        assert r["check"]["max_abs_input_diff"] < 1e-5
        # the derived figures follow from the measured ones (not only "> 0")
        assert r["speedup"] == pytest.approx(r["images_per_s"] / r["plain_images_per_s"])
        assert r["mfu"] == pytest.approx(r["images_per_s"] * r["train_gflop_per_image"] * 1e9
                                         / res["peak_flops"])
        assert r["plain_mfu"] == pytest.approx(r["plain_images_per_s"] *
                                               r["train_gflop_per_image"] * 1e9
                                               / res["peak_flops"])
    for r in res["pair"]:
        assert r["batched"]["check"]["ok"] and r["sequential"]["check"]["ok"]
        for e in ("batched", "sequential"):
            assert r[e]["efficiency"] == pytest.approx(r[e]["pair_seconds"]
                                                       / (2 * r[e]["one_seconds"]))
        assert r["auto_engine"] == "sequential"  # CPU
    (tta,) = res["time_to_accuracy"]
    # tiny: target 0 and one epoch, so only the bookkeeping is checked (not that a target is hit)
    for side in ("weightlab", "plain"):
        r = tta[side]
        assert r["epochs"] == 1 and r["seconds"] > 0 and 0.0 <= r["test_top1"] <= 1.0
    assert tta["speedup"] == pytest.approx(tta["plain"]["seconds"] / tta["weightlab"]["seconds"])
    assert res["peak_flops"] > 0 and "(a) cifar_resnet8" in proc.stdout


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                    reason="torch.compile on a CPU needs a C++ compiler")
@pytest.mark.parametrize("batched", ["on", "off"])
def test_compiled_training_equals_eager(digits, tmp_path, batched):
    """``--compile`` (torch.compile of the training forward; inductor's C++ backend on this
    CPU) computes what the eager step computes, for the vmapped pair and the sequential one.
    measured: max |Δ| over the weights after one epoch (MLP pair) 1.5e-8 batched, 3.0e-8
    sequential; bound 1e-5."""
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        job = _job(digits, tmp_path / name, k=2, batched=batched, epochs=1)
        job.speed = SpeedOptions(batched=batched, compile=compiled)
        runs[name] = train(job, progress=False)
    assert _engines(tmp_path / "compiled") == {"batched" if batched == "on" else "sequential"}
    for e, c in zip(runs["eager"], runs["compiled"]):
        assert _max_diff(e.state, c.state) < 1e-5
        assert c.metrics["test"]["top1"] == pytest.approx(e.metrics["test"]["top1"], abs=0.005)


def test_the_trained_model_cache_is_keyed_by_the_training_code(tmp_path, monkeypatch):
    """Editing a training source changes the digest in testing.trained's cache key (before:
    only the arguments and a hand-bumped version), and the same code gives the same digest."""
    from pathlib import Path

    pkg = tmp_path / "weightlab"
    shutil.copytree(Path(testing.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    fake = pkg / "testing.py"
    monkeypatch.setattr(testing, "__file__", str(fake))
    first = testing.training_code_digest()
    assert testing.training_code_digest() == first
    loop = pkg / "training" / "loop.py"
    loop.write_text(loop.read_text() + "\n# a change\n")
    assert testing.training_code_digest() != first
