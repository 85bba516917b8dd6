"""Initialization schemes: ``default`` (PyTorch's), ``vgg_init``, ``lecun_normal``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads when a model is built, not when the families are listed
    from torch import nn

INIT_SCHEMES = ("default", "vgg_init", "lecun_normal")


def initialize(model: nn.Module, scheme: str) -> nn.Module:
    if scheme == "default":
        return model
    from torch import nn

    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "vgg_init":
                if isinstance(m, nn.Conv2d):
                    # Kaiming normal, fan-out, ReLU gain: std = sqrt(2 / (k·k·C_out))
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
            else:  # lecun_normal: std = 1/sqrt(fan_in)
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(fan_in))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norms) or type(m).__name__ == "ChannelLayerNorm":
            if getattr(m, "weight", None) is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return model
