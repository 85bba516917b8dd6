"""The block-diagonal empirical Fisher and its inverse.

Blocks are contiguous chunks of ``block_size`` entries of the flattened chosen parameters, each
layer padded with zeros to a multiple of the block size (``span_layers``: one segment over all
layers instead, so a block size ≥ P gives the full Fisher). Padding entries have zero gradient,
so they decouple (F = λ on their diagonal) and never influence a real entry.

Per block b: F_b = λI + (1/N) Σ_n g_n,b g_n,bᵀ = λI + G_bᵀ G_b / N.

- :meth:`BlockLayout.group`: blocks [first, stop) as a :class:`BlockGroup` — the parameters
  they touch and where their entries land — so a group's Fisher can be built from the
  gradients of those parameters alone (WoodFisher's streamed mode).
- :func:`accumulate_gram` adds G_bᵀG_b for a chunk of gradients, for all blocks at once (bmm).
- :func:`invert_blocks` computes F_b⁻¹ for all blocks from a batched Cholesky factorization
  F = LLᵀ: F⁻¹ = L⁻ᵀL⁻¹, with L⁻¹ by block recursion (:func:`tril_inverse`) and one bmm.
- :func:`woodbury_sequential` is the textbook WoodFisher recursion, the reference the batched
  path must equal: F_0⁻¹ = I/λ, F_n⁻¹ = F_{n-1}⁻¹ − (F_{n-1}⁻¹ g_n)(F_{n-1}⁻¹ g_n)ᵀ /
  (N + g_nᵀ F_{n-1}⁻¹ g_n) (Sherman–Morrison for the rank-one term g_n g_nᵀ / N).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from weightlab.errors import WeightlabError


@dataclass
class BlockLayout:
    """Where each parameter's flat entries sit in the padded block vector
    (length num_blocks · block_size): layer l starts at ``offsets[l]``."""

    block_size: int
    num_blocks: int
    offsets: list[int]
    sizes: list[int]  # numel per layer, in order
    span_layers: bool = False

    @classmethod
    def build(cls, sizes: Sequence[int], block_size: int, span_layers: bool = False
              ) -> BlockLayout:
        offsets, start, end = [], 0, 0
        for n in sizes:
            if not span_layers:  # every layer starts a new block
                start = -(-end // block_size) * block_size
            offsets.append(start)
            start = end = start + n
        total = -(-end // block_size) * block_size
        return cls(block_size, total // block_size, offsets, list(sizes), span_layers)

    @property
    def padded(self) -> int:
        return self.num_blocks * self.block_size

    def pos(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(P,) padded index of every flat entry."""
        return torch.cat([torch.arange(o, o + n, device=device)
                          for o, n in zip(self.offsets, self.sizes, strict=True)])

    def fill(self, parts: Sequence[torch.Tensor], out: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Per-layer (…, numel) tensors → (…, num_blocks, block_size), zero padding. ``out``
        (a zeroed buffer from an earlier call) is reused: only the layer slices are written."""
        lead = parts[0].shape[:-1]
        if out is None:
            out = parts[0].new_zeros(*lead, self.padded)
        flat = out.view(*lead, self.padded)
        for part, o, n in zip(parts, self.offsets, self.sizes, strict=True):
            flat[..., o:o + n] = part
        return flat.view(*lead, self.num_blocks, self.block_size)

    def group(self, first: int, stop: int) -> BlockGroup:
        """Blocks [first, stop): per parameter whose entries fall in them (index into
        ``sizes``), the flat range [lo, hi) of that parameter and where it starts in the
        group's own padded vector (length (stop − first) · block_size)."""
        a, b = first * self.block_size, stop * self.block_size
        params, ranges, dst = [], [], []
        for i, (o, n) in enumerate(zip(self.offsets, self.sizes, strict=True)):
            lo, hi = max(o, a), min(o + n, b)
            if lo < hi:
                params.append(i)
                ranges.append((lo - o, hi - o))
                dst.append(lo - a)
        return BlockGroup(first, stop, self.block_size, params, ranges, dst)

    def to_blocks(self, flat: torch.Tensor) -> torch.Tensor:
        """(…, P) → (…, num_blocks, block_size)."""
        return self.fill(list(flat.split(self.sizes, -1)))

    def to_flat(self, blocked: torch.Tensor) -> torch.Tensor:
        """(…, num_blocks, block_size) → (…, P)."""
        flat = blocked.flatten(-2)
        return torch.cat([flat[..., o:o + n] for o, n in zip(self.offsets, self.sizes,
                                                             strict=True)], -1)


@dataclass
class BlockGroup:
    """Blocks [first, stop) of a :class:`BlockLayout`: the parameters they touch (``params``,
    indices into the layout's sizes), the slice [lo, hi) of each one's flat entries inside the
    group and where that slice starts in the group's padded vector (``dst``). A parameter may
    straddle two groups (span_layers, or a layer larger than a group): each takes its part."""

    first: int
    stop: int
    block_size: int
    params: list[int]
    ranges: list[tuple[int, int]]
    dst: list[int]

    @property
    def num_blocks(self) -> int:
        return self.stop - self.first

    def fill(self, parts: Sequence[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
        """Full per-parameter (c, numel) tensors of ``params`` → the group's
        (c, num_blocks, block_size) into ``out`` (zeroed once, padding stays 0)."""
        c = parts[0].shape[0]
        flat = out.view(c, -1)
        for part, (lo, hi), d in zip(parts, self.ranges, self.dst, strict=True):
            flat[:, d:d + hi - lo] = part[:, lo:hi]
        return flat.view(c, self.num_blocks, self.block_size)


def accumulate_gram(gram: torch.Tensor, grads_cnb: torch.Tensor) -> None:
    """gram_b += G_bᵀ G_b for a chunk of blocked per-sample gradients (c, nb, B), all blocks
    in one batched matmul."""
    g_ncb = grads_cnb.to(gram.dtype).transpose(0, 1)  # (nb, c, B)
    gram.baddbmm_(g_ncb.transpose(1, 2), g_ncb)


def tril_inverse(chol: torch.Tensor, base: int = 16) -> torch.Tensor:
    """L⁻¹ of a batch of lower-triangular matrices by the block identity
    [[A, 0], [C, D]]⁻¹ = [[A⁻¹, 0], [−D⁻¹CA⁻¹, D⁻¹]]: most of the work becomes batched matmuls.
    (Batched ``solve_triangular``/``cholesky_inverse`` of many small matrices run 4–15× slower
    on CPU, measured on 128×128 blocks.)"""
    n = chol.shape[-1]
    if n <= base:
        eye = torch.eye(n, device=chol.device, dtype=chol.dtype)
        return torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
    h = n // 2
    a_inv = tril_inverse(chol[:, :h, :h], base)
    d_inv = tril_inverse(chol[:, h:, h:], base)
    out = torch.zeros_like(chol)
    out[:, :h, :h] = a_inv
    out[:, h:, h:] = d_inv
    out[:, h:, :h] = -torch.bmm(d_inv, torch.bmm(chol[:, h:, :h], a_inv))
    return out


def invert_blocks(gram: torch.Tensor, samples: int, damping: float, group: int | None = None
                  ) -> torch.Tensor:
    """In place: gram_b → F_b⁻¹ = (λI + gram_b / N)⁻¹, ``group`` blocks at a time (bounds the
    workspace). Blocks whose factorization fails in float32 are redone in float64; if that
    fails too, the blocks' float32 rounding (~ε·‖G_bᵀG_b/N‖) exceeds the damping — typical of
    N < B samples with large gradients, where G_bᵀG_b is rank-deficient: float64 blocks
    (``precision``) or a larger damping are needed."""
    nb, bs, _ = gram.shape
    group = group or nb
    eye = torch.eye(bs, device=gram.device, dtype=gram.dtype)
    for i in range(0, nb, group):
        f = gram[i:i + group].div_(samples).add_(eye, alpha=damping)
        chol, info = torch.linalg.cholesky_ex(f)
        bad = info != 0
        if bad.any():
            chol64, info64 = torch.linalg.cholesky_ex(f[bad].double())
            if (info64 != 0).any():
                fix = ("rounding exceeds the damping; use precision=float64 or raise the "
                       "damping" if gram.dtype == torch.float32 else "raise the damping")
                raise WeightlabError(f"woodfisher: {int((info64 != 0).sum())} Fisher blocks are "
                                     f"not positive definite with damping={damping:g} in "
                                     f"{str(gram.dtype).removeprefix('torch.')}; {fix}")
            chol[bad] = chol64.to(chol.dtype)  # float32 factor of the float64 answer
        # F⁻¹ = L⁻ᵀ L⁻¹
        chol_inv = tril_inverse(chol)
        del chol
        torch.bmm(chol_inv.transpose(1, 2), chol_inv, out=f)
    return gram


def woodbury_sequential(grads_nkb: torch.Tensor, damping: float) -> torch.Tensor:
    """Reference F_b⁻¹ for every block by N rank-one Woodbury updates (the WoodFisher paper's
    recursion; vectorized over blocks, sequential over samples). ``grads_nkb``: (N, nb, B)."""
    n_samples, nb, bs = grads_nkb.shape
    finv = torch.eye(bs, device=grads_nkb.device, dtype=grads_nkb.dtype).repeat(nb, 1, 1)
    finv /= damping
    for g in grads_nkb:  # the recursion is sequential in n by construction
        u = torch.bmm(finv, g.unsqueeze(-1))  # F⁻¹ g, (nb, B, 1)
        denom = n_samples + torch.bmm(g.unsqueeze(1), u)  # N + gᵀF⁻¹g, (nb, 1, 1)
        finv.baddbmm_(u, u.transpose(1, 2) / denom, alpha=-1.0)
    return finv
