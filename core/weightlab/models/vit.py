"""A small Vision Transformer (Dosovitskiy et al. 2021) for 28×28 / 32×32 images: patch
embedding by a strided conv, a class token, learned position embeddings, pre-norm blocks
(LayerNorm → nn.MultiheadAttention → residual; LayerNorm → MLP with GELU → residual), a final
LayerNorm and a linear head on the class token. Built from torch.nn only, so that the traced
graph sees the packed attention weights a user's own ViT would have."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, input_shape, num_classes: int, patch: int = 7, depth: int = 4,
                 dim: int = 64, heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        c, h, w = input_shape
        if h % patch or w % patch:
            raise ValueError(f"patch {patch} does not tile a {h}×{w} image")
        tokens = (h // patch) * (w // patch)
        self.patch_embed = nn.Conv2d(c, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        # ViT's initialization (timm): truncated normal σ = 0.02 for tokens and embeddings
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
