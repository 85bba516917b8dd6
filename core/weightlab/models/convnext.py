"""A small ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s") for 28×28 / 32×32 images,
laid out as torchvision's and timm's ``convnext``: a patchify stem (conv k = s = ``stem``) and a
channels-first LayerNorm; stages of blocks

    x + γ ⊙ Linear₂(GELU(Linear₁(LayerNorm(DWConv₇ₓ₇(x)))))     (Linear₁: C → 4C, Linear₂: 4C → C)

where the LayerNorm and the two linears run channels-last (permute, ``nn.LayerNorm``,
``nn.Linear``, permute back, as torchvision's ``CNBlock``) and γ is a per-channel layer scale
(initialised to 1e-6); between stages a channels-first LayerNorm and a 2×2 stride-2 conv that
doubles the width; the head is a global average pool, a LayerNorm and a linear layer.

ImageNet's stem is a 4×4 stride-4 patchify conv on 224-pixel images (56×56 maps); on 28/32-pixel
images the default ``stem = 2`` is the small-image stand-in (14×14 / 16×16 maps). Built from
torch.nn only, so the traced graph sees what a user's own model has.
"""

from __future__ import annotations

import torch
from torch import nn

from weightlab.models.layers import ChannelLayerNorm

# the paper's (and torchvision's, timm's) LayerNorm ε
EPS = 1e-6


class Block(nn.Module):
    """One ConvNeXt block; ``layer_scale = 0`` leaves γ out (timm's ``ls_init_value=None``)."""

    def __init__(self, dim: int, kernel: int, mlp_ratio: int, layer_scale: float,
                 drop_path: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.layer_scale = (nn.Parameter(torch.full((dim, 1, 1), float(layer_scale)))
                            if layer_scale > 0 else None)
        self.drop_path = drop_path

    def forward(self, x):
        h = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW → NHWC
        h = self.pwconv2(self.act(self.pwconv1(self.norm(h)))).permute(0, 3, 1, 2)
        if self.layer_scale is not None:
            h = self.layer_scale * h
        if self.drop_path > 0 and self.training:
            # stochastic depth (Huang et al. 2016): drop the branch per sample with probability
            # p and scale the kept ones by 1/(1 − p), as torchvision's StochasticDepth("row")
            keep = 1.0 - self.drop_path
            mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)
            h = h * mask.bernoulli_(keep) / keep
        return x + h


class ConvNeXt(nn.Module):
    def __init__(self, input_shape, num_classes: int, width: int = 32,
                 depths: tuple[int, ...] = (2, 2), stem: int = 2, kernel: int = 7,
                 mlp_ratio: int = 4, layer_scale: float = 1e-6, drop_path: float = 0.0):
        super().__init__()
        c, h, w = input_shape
        size = min(h, w) // stem
        for _ in depths[1:]:
            size //= 2
        if size < 1:
            raise ValueError(f"a {h}×{w} image is smaller than 1 pixel after the stem "
                             f"({stem}×{stem}) and {len(depths) - 1} downsamplings")
        widths = [width * 2 ** i for i in range(len(depths))]
        self.stem = nn.Sequential(nn.Conv2d(c, width, stem, stride=stem),
                                  ChannelLayerNorm(width, eps=EPS))
        layers: list[nn.Module] = []
        # stochastic depth rises linearly from 0 to drop_path over the blocks (the paper's rule)
        total = sum(depths)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]
        k = 0
        for i, (dim, depth) in enumerate(zip(widths, depths)):
            if i > 0:
                layers.append(nn.Sequential(ChannelLayerNorm(widths[i - 1], eps=EPS),
                                            nn.Conv2d(widths[i - 1], dim, 2, stride=2)))
            layers.append(nn.Sequential(*[Block(dim, kernel, mlp_ratio, layer_scale, rates[k + j])
                                          for j in range(depth)]))
            k += depth
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm = nn.LayerNorm(widths[-1], eps=EPS)
        self.head = nn.Linear(widths[-1], num_classes)
        # the paper's initialization (torchvision, timm): truncated normal σ = 0.02 on conv and
        # linear weights, zero biases; LayerNorms γ = 1, β = 0
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(self.norm(self.pool(x).flatten(1)))
