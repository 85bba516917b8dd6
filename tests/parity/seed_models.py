"""The seed code's CIFAR models (XingyuQu/VF ``source/models``: open_lth's ResNet with BN/LN,
the plain and Fixup ResNets, torchvision-style VGG), re-stated for the parity tests from the
seed's definitions — its module names (``segments``, ``norm1``, ``shortcut``, ``fc``,
``features``, ``classifier``), its parameter placement and its forward passes. Written for the
tests; nothing here is imported from weightlab."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeedLayerNorm(nn.LayerNorm):
    """The seed's LayerNorm: nn.LayerNorm over channels, applied channels-last."""

    def forward(self, x):
        y = F.layer_norm(x.permute(0, 2, 3, 1), [x.size(1)], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _norm(kind: str, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if kind == "bn" else SeedLayerNorm(c)


class Block(nn.Module):
    def __init__(self, f_in, f_out, kind, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, 2 if downsample else 1, 1, bias=False)
        self.norm1 = _norm(kind, f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(kind, f_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(f_in, f_out, 1, 2, bias=False), _norm(kind, f_out))
                         if downsample or f_in != f_out else nn.Sequential())

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out)


class PlainBlock(nn.Module):
    def __init__(self, f_in, f_out, downsample, bias):
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, 2 if downsample else 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, 1, 1, bias=bias)
        self.shortcut = (nn.Sequential(nn.Conv2d(f_in, f_out, 1, 2, bias=False))
                         if downsample or f_in != f_out else nn.Sequential())

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class FixupBlock(nn.Module):
    def __init__(self, f_in, f_out, downsample):
        super().__init__()
        self.project = downsample or f_in != f_out
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = nn.Conv2d(f_in, f_out, 3, 2 if downsample else 1, 1, bias=False)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv2d(f_out, f_out, 3, 1, 1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.shortcut = (nn.Sequential(nn.Conv2d(f_in, f_out, 1, 2, bias=False))
                         if self.project else nn.Sequential())

    def forward(self, x):
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        return F.relu(out + self.shortcut(x + self.bias1a if self.project else x))


class SeedResNet(nn.Module):
    """``cifar_resnet<N>[_ln][_<W>x]``, ``plain_cifar_resnet<N>[_nobias]``,
    ``fixup_cifar_resnet<N>`` as the seed builds them from their names."""

    def __init__(self, name: str, num_classes: int = 10):
        super().__init__()
        parts = name.split("_")
        self.kind = "plain" if name.startswith("plain_") else \
            "fixup" if name.startswith("fixup_") else ("ln" if "ln" in parts else "bn")
        depth = int(next(p for p in parts if p.startswith("resnet"))[6:])
        w = 16 * int(parts[-1][:-1]) if parts[-1].endswith("x") else 16
        d = (depth - 2) // 6
        bias = "nobias" not in parts
        plan = [(w, d), (2 * w, d), (4 * w, d)]
        c = plan[0][0]
        self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=self.kind == "plain" and bias)
        if self.kind in ("bn", "ln"):
            self.norm1 = _norm(self.kind, c)
        if self.kind == "fixup":
            self.bias1 = nn.Parameter(torch.zeros(1))
        segments = []
        for s, (f, n) in enumerate(plan):
            blocks = []
            for b in range(n):
                down = s > 0 and b == 0
                blocks.append(PlainBlock(c, f, down, bias) if self.kind == "plain" else
                              FixupBlock(c, f, down) if self.kind == "fixup" else
                              Block(c, f, self.kind, down))
                c = f
            segments.append(nn.Sequential(*blocks))
        self.segments = nn.Sequential(*segments)
        if self.kind == "fixup":
            self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(c, num_classes, bias=bias or self.kind != "plain")

    def forward(self, x):
        if self.kind == "fixup":
            out = F.relu(self.conv1(x) + self.bias1)
        elif self.kind == "plain":
            out = F.relu(self.conv1(x))
        else:
            out = F.relu(self.norm1(self.conv1(x)))
        out = self.segments(out)
        out = F.avg_pool2d(out, out.size(3)).flatten(1)
        return self.fc(out + self.bias2 if self.kind == "fixup" else out)


VGG_PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


class SeedVGG(nn.Module):
    """``cifar_vgg<D>[_bn|_ln|_nobias][_<W>x]``: conv (+norm) + ReLU per entry, 2×2 max-pools,
    AvgPool2d(2), one linear layer."""

    def __init__(self, name: str, num_classes: int = 10):
        super().__init__()
        parts = name.split("_")
        width = int(parts[-1][:-1]) if parts[-1].endswith("x") else 1
        bias = "nobias" not in parts
        layers: list[nn.Module] = []
        c = 3
        for v in VGG_PLANS[int(parts[1][3:])]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, v * width, 3, padding=1, bias=bias))
            if "bn" in parts or "ln" in parts:
                layers.append(_norm("bn" if "bn" in parts else "ln", v * width))
            layers.append(nn.ReLU())
            c = v * width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(512 * width, num_classes, bias=bias))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def seed_model(name: str, num_classes: int = 10) -> nn.Module:
    return SeedVGG(name, num_classes) if name.startswith("cifar_vgg") else \
        SeedResNet(name, num_classes)
