"""A final batch with fewer images than ranks: the ranks past its end get an empty share. They
must step anyway (DDP's all-reduce needs every rank) with BatchNorm statistics untouched, and
the batch is trained, as in single-process training (it used to be dropped)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from weightlab import checkpoint as ckpt_io
from weightlab import plugins
from weightlab.data.bundle import load_data
from weightlab.data.loaders import num_batches, shard_bounds
from weightlab.params import build_params
from weightlab.training.config import SpeedOptions, TrainConfig
from weightlab.training.distributed import DistInfo, keep_norm_stats
from weightlab.training.engines import create
from weightlab.training.loop import TrainJob, train


def test_the_final_batch_is_kept_whatever_the_world_size():
    assert [num_batches(1437, 359, False, w) for w in (1, 2, 4)] == [5, 5, 5]
    assert num_batches(1437, 359, True, 2) == 4
    assert shard_bounds(1436, 1437, 1, 2) == (1437, 1437)  # rank 1: the empty share


@pytest.mark.parametrize("batched", ["off", "on"])
def test_an_empty_share_steps_a_batchnorm_model_and_keeps_its_statistics(batched):
    """cifar_resnet8 (BatchNorm) pair on 8×8 digits: a step on zero images raises nothing,
    leaves running means/variances and batch counts bit-identical, and a following real
    step still moves them."""
    reg = plugins.registry()
    torch.manual_seed(0)
    nets = [reg.create("models", "cifar_resnet8").build((1, 8, 8), 10) for _ in range(2)]
    cfg = build_params(TrainConfig, {"epochs": 1, "batch_size": 4, "lr": 0.1})
    engine = create(nets, cfg, SpeedOptions(batched=batched), torch.device("cpu"), DistInfo(),
                    {}, (1, 8, 8))
    for n in engine.models:
        n.train()
    before = [{k: b.clone() for k, b in n.named_buffers()} for n in engine.models]
    empty = [(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))] * 2
    with keep_norm_stats(engine.models):
        engine.step(empty, 0.1, 1.0)
    for n, old in zip(engine.models, before, strict=True):
        assert all(torch.equal(b, old[k]) for k, b in n.named_buffers())
    real = [(torch.randn(4, 1, 8, 8), torch.arange(4))] * 2
    engine.step(real, 0.1, 0.25)
    key = next(k for k in before[0] if k.endswith("running_mean"))
    assert not torch.equal(dict(engine.models[0].named_buffers())[key], before[0][key])


@pytest.mark.slow
def test_two_gloo_processes_train_a_one_image_final_batch_like_one_process(tmp_path):
    """1437 digits training images at batch 359: 4 full batches and one of 1 image, which rank
    0 trains while rank 1 steps on an empty share. The 2-process run equals single-process
    training (measured: max |Δ| ≈ 6e-8 over 10 steps); with the batch dropped it would be one
    SGD step behind."""
    args = ["train", "mlp", "--data", "digits", "--epochs", "2", "--batch-size", "359",
            "--lr", "0.05", "-p", "width=32", "-p", "depth=2", "--no-batched"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "weightlab_cli.main", *args, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = build_params(TrainConfig, {"epochs": 2, "batch_size": 359, "lr": 0.05})
    job = TrainJob("mlp", {"width": 32, "depth": 2}, load_data("digits"), cfg,
                   tmp_path / "one", speed=SpeedOptions(batched="off"))
    one = train(job, progress=False)[0]
    two = ckpt_io.load(tmp_path / "ddp" / "model_1.safetensors")
    assert max((two.state[n] - one.state[n]).abs().max().item() for n in one.state) < 1e-6
