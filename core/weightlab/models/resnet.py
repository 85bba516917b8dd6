"""CIFAR ResNets (He et al. 2016, the 6n+2 family) in the REPAIR / Vanishing Feature layout:
stem conv → three stages of n basic blocks (16k/32k/64k channels) → global pool → linear.
Downsampling shortcuts are 1×1 convs (+ norm). Keys: ``conv1, bn1, layer{1,2,3}.<i>.*,
linear``. ``norm`` is bn, ln or none (plain); ``fixup`` adds Fixup's scalar biases and scale.
The seed code (XingyuQu/VF ``source/models``) names the same tensors ``segments.<s>``,
``norm*`` and ``fc``; :mod:`weightlab.statekeys` renames them on import.
"""

import torch
import torch.nn.functional as F
from torch import nn

from weightlab.models.families import blocks_per_stage
from weightlab.models.layers import norm2d

__all__ = ["BasicBlock", "CifarResNet", "blocks_per_stage"]


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, bias: bool,
                 shortcut_bias: bool = False):
        super().__init__()
        conv_bias = bias and norm == "none"
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=conv_bias)
        self.bn1 = norm2d(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=conv_bias)
        self.bn2 = norm2d(norm, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            # the seed's plain ResNet has no bias on its 1×1 shortcut convs (shortcut_bias=False)
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=conv_bias and shortcut_bias),
                norm2d(norm, c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FixupBlock(nn.Module):
    """Fixup (Zhang et al. 2019): no norm; scalar biases before each conv and activation,
    a scalar multiplier on the residual branch, second conv initialised at zero."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        # as the seed (and Zhang et al.'s code): bias1a reaches a projection shortcut only; an
        # identity shortcut carries x itself
        return F.relu(out + (self.shortcut(x + self.bias1a) if len(self.shortcut) else x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: int = 1,
                 norm: str = "bn", bias: bool = True, fixup: bool = False,
                 shortcut_bias: bool = False):
        super().__init__()
        n = blocks_per_stage(depth)
        widths = [16 * width, 32 * width, 64 * width]
        conv_bias = bias and norm == "none" and not fixup
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=conv_bias)
        self.bn1 = norm2d("none" if fixup else norm, widths[0])
        if fixup:
            self.bias1 = nn.Parameter(torch.zeros(1))
        c_in = widths[0]
        for stage, c_out in enumerate(widths):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(FixupBlock(c_in, c_out, stride) if fixup
                              else BasicBlock(c_in, c_out, stride, norm, bias, shortcut_bias))
                c_in = c_out
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        if fixup:
            self.bias2 = nn.Parameter(torch.zeros(1))
        self.linear = nn.Linear(c_in, num_classes, bias=bias or fixup)
        self.fixup = fixup
        if fixup:
            self._fixup_init(3 * n)

    def _fixup_init(self, num_blocks: int) -> None:
        # Fixup rule for m=2 layers per branch: scale conv1 by L^(-1/(2m-2)) = L^-1/2, zero conv2.
        for m in self.modules():
            if isinstance(m, FixupBlock):
                nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
                m.conv1.weight.data.mul_(num_blocks ** -0.5)
                nn.init.zeros_(m.conv2.weight)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        if self.fixup:  # the seed: relu(conv1(x) + bias1), the scalar bias before the ReLU
            out = F.relu(self.conv1(x) + self.bias1)
        else:
            out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = out.mean((2, 3))  # global average pool (a reduction vmap batches; the pool op
        # falls back to a per-model loop in its backward under vmap)
        if self.fixup:
            out = out + self.bias2
        return self.linear(out)
