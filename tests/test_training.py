"""Training through its public API (TrainJob, train) and the ``weightlab train`` command: an MLP
learns digits, ``--pair`` gives two different models, and a resumed run ends with the same
weights as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from weightlab import checkpoint as ckpt_io
from weightlab.data.bundle import load_data
from weightlab.params import build_params
from weightlab.training.config import TrainConfig
from weightlab.training.logging import read_jsonl
from weightlab.training.loop import RESUME_FILE, TrainJob, train

MLP = {"depth": 3, "width": 128}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _job(digits, run_dir, **cfg):
    values = {"epochs": 15, "batch_size": 64, "lr": 0.05, "seed": 0, **cfg}
    return TrainJob("mlp", dict(MLP), digits, build_params(TrainConfig, values), run_dir)


def test_mlp_learns_digits(digits, tmp_path):
    """measured: test top-1 98.06% (353/360) after 15 epochs, test loss 0.061."""
    (ck,) = train(_job(digits, tmp_path), progress=False)
    test = ck.metrics["test"]
    assert test["top1"] >= 0.96 and test["loss"] < 0.15
    assert ck.metrics["train"]["top1"] > 0.97
    net, saved = ckpt_io.load_model(tmp_path / "model_1.safetensors")
    from weightlab.metrics import evaluate

    again = evaluate(net, digits.loader("test"))
    assert again["top1"] == pytest.approx(test["top1"]) and again["samples"] == 360
    assert saved.provenance["seed"] == 0 and saved.train["epochs"] == 15
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(1, 16))
    assert records[-1]["train_loss"] < records[0]["train_loss"] / 3
    assert not (tmp_path / RESUME_FILE).exists()  # a finished run leaves no resume state


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(digits, tmp_path, optimizer):
    # multistep milestones inside the run: the resumed run must restore lr position, the
    # optimizer state (momentum buffers; Adam's moments and step count) and data order exactly
    cfg = {"epochs": 4, "milestones": [50, 70], "weight_decay": 5e-4, "optimizer": optimizer,
           **({"lr": 1e-3} if optimizer != "sgd" else {})}
    (full,) = train(_job(digits, tmp_path / "full", **cfg), progress=False)

    def stop_after_epoch_2(epoch, nets):
        if epoch == 3:  # epoch 3 has trained, but its resume state is never written
            raise Interrupted

    job = _job(digits, tmp_path / "cut", **cfg)
    with pytest.raises(Interrupted):
        train(job, progress=False, on_epoch=stop_after_epoch_2)
    state = torch.load(job.run_dir / RESUME_FILE, weights_only=True)
    assert state["epoch"] == 2 and state["iter"] == 2 * 23
    assert not (job.run_dir / "model_1.safetensors").exists()
    (resumed,) = train(job, resume=True, progress=False)
    assert resumed.state.keys() == full.state.keys()
    for k in full.state:
        assert torch.equal(resumed.state[k], full.state[k]), k
    assert resumed.metrics["test"] == full.metrics["test"]
    assert [r["epoch"] for r in read_jsonl(job.run_dir / "metrics.jsonl")] == [1, 2, 3, 4]
    # without resume=True the same directory would start again from scratch
    (fresh,) = train(job, progress=False, force=True)
    assert torch.equal(fresh.state["layers.1.weight"], full.state["layers.1.weight"])



def _interrupt_step(monkeypatch, at_call: int, action) -> None:
    """Run ``action()`` just before the ``at_call``-th training step (1-based)."""
    from weightlab.training import engines

    original, calls = engines.SequentialEngine.step, [0]

    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == at_call:
            action()
        return original(self, *a, **k)

    monkeypatch.setattr(engines.SequentialEngine, "step", step)


def _same_run(a, b, run_dir_a, run_dir_b):
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k
    ra = [r for r in read_jsonl(run_dir_a / "metrics.jsonl") if "epoch" in r]
    rb = [r for r in read_jsonl(run_dir_b / "metrics.jsonl") if "epoch" in r]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rs]  # noqa: E731
    assert strip(ra) == strip(rb)  # epoch metrics (the interrupted epoch's sums) too


def test_sigterm_mid_epoch_stops_cleanly_and_resumes_bit_identical(digits, tmp_path,
                                                                   monkeypatch):
    """A scheduler's SIGTERM during step 30 (epoch 2, batch 7 of 23): the step finishes, the
    resume state is written, training stops with a one-line TrainingInterrupted; --resume
    continues inside epoch 2 and ends with the weights and metric records of an uninterrupted
    run."""
    import os
    import signal

    from weightlab.errors import TrainingInterrupted

    cfg = {"epochs": 3, "milestones": [40], "weight_decay": 5e-4}
    (full,) = train(_job(digits, tmp_path / "full", **cfg), progress=False)
    job = _job(digits, tmp_path / "cut", **cfg)
    with monkeypatch.context() as m:
        _interrupt_step(m, 30, lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(TrainingInterrupted, match="iteration 30 .epoch 2, batch 7 of 23"):
            train(job, progress=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    state = torch.load(job.run_dir / RESUME_FILE, weights_only=True)
    assert (state["epoch"], state["iter"], state["batch"]) == (1, 30, 7)
    (resumed,) = train(job, resume=True, progress=False)
    _same_run(full, resumed, tmp_path / "full", job.run_dir)


def test_resume_every_n_iterations_survives_a_crash_mid_epoch(digits, tmp_path, monkeypatch):
    """--resume-every 10 and a crash in step 41: the run resumes from iteration 40 (epoch 2,
    batch 17) and ends bit-identical to an uninterrupted run."""
    cfg = {"epochs": 3, "weight_decay": 5e-4}
    (full,) = train(_job(digits, tmp_path / "full", **cfg), progress=False)
    job = _job(digits, tmp_path / "cut", **cfg)
    job.resume_every = 10

    def crash():
        raise Interrupted

    with monkeypatch.context() as m:
        _interrupt_step(m, 41, crash)
        with pytest.raises(Interrupted):
            train(job, progress=False)
    state = torch.load(job.run_dir / RESUME_FILE, weights_only=True)
    assert (state["epoch"], state["iter"], state["batch"]) == (1, 40, 17)
    (resumed,) = train(job, resume=True, progress=False)
    _same_run(full, resumed, tmp_path / "full", job.run_dir)

def test_train_pair_from_the_cli(tmp_path, cli):
    """measured after 3 epochs: test top-1 91.7% (seed 0) and 89.2% (seed 1)."""
    out = tmp_path / "pair"
    args = ["train", "mlp", "--data", "digits", "--pair", "--epochs", "3", "--batch-size", "64",
            "--lr", "0.05", "--schedule", "constant", "-p", "width=64", "--out", out]
    code, stdout, err = cli(*args, "--json")
    assert code == 0, err
    rows = json.loads(stdout)  # stdout holds the JSON alone; diagnostics went to stderr
    assert [r["model"] for r in rows] == [str(out / "model_1.safetensors"),
                                          str(out / "model_2.safetensors")]
    assert all(r["test_top1"] > 0.8 for r in rows)
    a, ca = ckpt_io.load_model(out / "model_1.safetensors")
    b, cb = ckpt_io.load_model(out / "model_2.safetensors")
    assert (ca.provenance["seed"], cb.provenance["seed"]) == (0, 1)
    assert ca.model["params"]["width"] == 64 and ca.data["name"] == "digits"
    assert not torch.equal(a.layers[1].weight, b.layers[1].weight)  # two different models
    x = torch.randn(8, 1, 8, 8)
    assert not torch.allclose(a(x), b(x))
    code, _, err = cli(*args)
    assert code == 2 and "already holds trained models" in err and "--force" in err


def test_bad_training_settings_are_usage_errors(tmp_path, cli):
    base = ["train", "mlp", "--data", "digits", "--out", tmp_path]
    code, _, err = cli(*base, "--lr", "-1")
    assert code == 2 and err.strip() == "error: train.lr: -1.0 must be >= 0.0"
    code, _, err = cli(*base, "--schedule", "cosin")
    assert code == 2 and "did you mean 'cosine'" in err
    code, _, err = cli(*base, "--train-param", "momentun=0.5")
    assert code == 2 and "did you mean 'momentum'" in err
    code, _, err = cli(*base, "-p", "widht=3")
    assert code == 2 and "did you mean 'width'" in err
    code, _, err = cli(*base, "--wandb-mode", "sometimes")
    assert code == 2 and "online, offline, disabled" in err
    assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize("augment", [True, False])
def test_augment_false_is_the_seeds_no_random_aug(tmp_path, monkeypatch, augment):
    """The training loader is asked for the dataset's augmentation unless augment=false (the
    seed code's --no-random-aug), on a synthetic set given crop + flip augmentation."""
    from weightlab.data.bundle import DataBundle

    asked = []
    real = DataBundle.loader

    def spy(self, split="train", **kw):
        if split == "train":
            asked.append(kw.get("augment"))
        return real(self, split, **kw)

    monkeypatch.setattr(DataBundle, "loader", spy)
    data = load_data("synthetic", params={"n_train": 64, "n_test": 32, "size": 8})
    data.dataset.augment = "crop_flip"
    cfg = build_params(TrainConfig, {"epochs": 1, "batch_size": 32, "seed": 0,
                                     "augment": augment})
    train(TrainJob("mlp", {"depth": 1, "width": 8}, data, cfg, tmp_path), progress=False)
    assert asked == [augment]
