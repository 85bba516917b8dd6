"""The training recipes in recipes/train/ against the seed's training scripts (XingyuQu/VF
training_scripts/*.sh with source/utils/opts.py and load_scheduler), re-stated here by hand from
those scripts; and the seed's warm-up + step schedule re-built from torch's own schedulers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from weightlab.training import recipes
from weightlab.training.config import TrainConfig
from weightlab.training.schedules import lr_factor

# recipe → (model, data, --special-init, --scheduler): read off each seed script;
# None for the two CIFAR-100 recipes the seed has no script for (derived from CIFAR-10's)
SEED_SCRIPTS = {
    "vf-cifar10-vgg16": ("cifar_vgg16", "cifar10", "vgg_init", "lambda"),
    "vf-cifar10-vgg16-bn": ("cifar_vgg16_bn", "cifar10", "vgg_init", "lambda"),
    "vf-cifar10-vgg16-ln": ("cifar_vgg16_ln", "cifar10", "vgg_init", "lambda"),
    "vf-cifar10-vgg16-ln-torch-init": ("cifar_vgg16_ln", "cifar10", None, "linear_step"),
    "vf-cifar10-resnet20": ("cifar_resnet20", "cifar10", None, "lambda"),
    "vf-cifar10-resnet20-ln": ("cifar_resnet20_ln", "cifar10", None, "linear_step"),
    "vf-cifar10-resnet20-4x": ("cifar_resnet20_4x", "cifar10", None, "linear_step"),
    "vf-cifar10-resnet20-ln-4x": ("cifar_resnet20_ln_4x", "cifar10", None, "linear_step"),
    "vf-cifar100-vgg16-bn": ("cifar_vgg16_bn", "cifar100", "vgg_init", "lambda"),
    "vf-cifar100-vgg16-ln": ("cifar_vgg16_ln", "cifar100", "vgg_init", "lambda"),
    "vf-cifar100-resnet20": ("cifar_resnet20", "cifar100", None, "lambda"),
    "vf-cifar100-resnet20-ln": ("cifar_resnet20_ln", "cifar100", None, "linear_step"),
    "vf-cifar100-vgg16": ("cifar_vgg16", "cifar100", "vgg_init", "lambda"),  # as cifar10_vgg16.sh
    "vf-cifar100-resnet20-4x": ("cifar_resnet20_4x", "cifar100", None, "linear_step"),  # as _4x.sh
}
# every script: --epochs 160 --batch-size 128 --optimizer sgd --lr 0.1 --momentum 0.9
# --wd 0.0001 --milestones "32000, 48000"; linear_step adds --warmup-iters 391
COMMON = {"epochs": 160, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
          "milestones": [32000, 48000], "gamma": 0.1, "schedule": "multistep"}


def test_every_recipe_is_a_seed_script():
    assert sorted(recipes.available()) == sorted(SEED_SCRIPTS)


@pytest.mark.parametrize("name", sorted(SEED_SCRIPTS))
def test_recipe_has_the_seed_scripts_settings(name):
    model, data, init, scheduler = SEED_SCRIPTS[name]
    rec = recipes.load(name)
    assert (rec.model, rec.data, rec.models, rec.same_init) == (model, data, 2, False)
    assert rec.model_params.get("init", "default") == (init or "default")
    assert {k: rec.train[k] for k in COMMON} == COMMON
    warm = scheduler == "linear_step"
    assert rec.train.get("warmup_iters", 0) == (391 if warm else 0)
    assert rec.train.get("warmup_epochs", 0) == 0
    if warm:
        assert rec.train["warmup_start"] == 1e-5
    # the seed normalizes CIFAR-100 with CIFAR-10's statistics (data_funcs.py)
    assert rec.data_params == ({"normalization": "cifar10"} if data == "cifar100" else {})


@pytest.mark.parametrize("scheduler", ["lambda", "linear_step"])
def test_the_seed_schedule_is_reproduced_step_by_step(scheduler):
    """The seed's load_scheduler built from torch's schedulers (LambdaLR for 'lambda';
    SequentialLR(LinearLR(start_factor=1e-5, total_iters=W), LambdaLR(0.1^Σ(it ≥ m − W)))
    for 'linear_step'), stepped once per iteration, on scaled milestones [500, 800] and W = 391:
    weightlab's factor agrees to 1e-12 at every one of 1000 iterations."""
    milestones, warm, total = [500, 800], 391, 1000
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    if scheduler == "lambda":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda it: 0.1 ** (sum(it >= np.array(milestones))))
        cfg = TrainConfig(lr=0.1, milestones=milestones)
    else:
        step = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda it: 0.1 ** (sum(it >= np.array(milestones) - warm)))
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-5, total_iters=warm)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, step], milestones=[warm])
        cfg = TrainConfig(lr=0.1, milestones=milestones, warmup_iters=warm, warmup_start=1e-5)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"] / 0.1)
        opt.step()
        sched.step()
    ours = [lr_factor(cfg, it, total) for it in range(total)]
    assert np.max(np.abs(np.array(ours) - np.array(seen))) < 1e-12
