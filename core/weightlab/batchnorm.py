"""BatchNorm statistics reset (Izmailov et al. 2018, SWA's ``bn_update``; the "reset BN"
baseline of REPAIR, Jordan et al. 2023): the one implementation the repair normalizer, soups
and everything else call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorms(model))


@torch.no_grad()
def reset_bn(model: nn.Module, batches: Iterable[Any]) -> nn.Module:
    """Recompute every BatchNorm's running statistics in place from one pass over ``batches``
    (input tensors, or (input, label) pairs): running_mean = mean over batches of each batch's
    channel mean, running_var = mean of each batch's unbiased channel variance (PyTorch's
    cumulative average, momentum=None). Only the BatchNorms are in train mode, so dropout and
    friends do not perturb the statistics; modes and momenta are restored even on error.
    Returns ``model``."""
    bns = batchnorms(model)
    if not bns:
        return model
    was_training, momenta = model.training, [bn.momentum for bn in bns]
    dev = next(model.parameters()).device
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(dev))
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)
    return model
