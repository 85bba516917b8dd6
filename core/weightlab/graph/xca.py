"""Cross-covariance attention (XCiT, EdgeNeXt's XCA): attention across channels.

With q, k, v of shape (B, H, d, N) (heads, head channels, tokens: ``permute(2, 0, 3, 4, 1)``
of the fused projection), per head h

    A_h = softmax_row(q̂_h k̂_hᵀ · τ_h)   (d × d),   out_h = A_h v_h   (d × N)

where q̂, k̂ are L2-normalized along the tokens and τ_h is a learned temperature. Row i of A_h
belongs to query channel i, column j to key channel j; out_h's channel i is query channel i.
Permuting q's channels within head h by P and k's and v's by Q gives A'_h = P A_h Qᵀ (the
normalization is per channel; softmax is taken along each row, and permuting a row's entries
permutes its softmax), so out'_h = P A_h Qᵀ Q v_h = P out_h: the output projection's columns
move with P. Two spaces, both grouped by the H heads and tied (head h's rows meet head h's
columns and τ_h):

- **query·output**: rows of W_q, b_q and the output projection's columns (P);
- **key·value**: rows of W_k, b_k, W_v, b_v (Q, contracted in A_h v_h).

τ (one value per head) follows the head permutation. Unlike token attention, P and Q are
independent within a head: the channel-channel matrix is permuted on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch.fx as fx

from weightlab.errors import WeightlabError

if TYPE_CHECKING:  # pragma: no cover
    from weightlab.graph.trace import _Builder


@dataclass(frozen=True)
class Cross:
    """Channel-channel attention scores (…, H, d, d): rows in query·output space ``space``
    at axis ``row_axis``, columns in key·value space ``col`` at ``col_axis``."""

    space: int
    col: int
    heads: int
    head_axis: int
    row_axis: int
    col_axis: int

    def moved(self, dims: list[int]) -> Cross:
        """After out = x.permute(dims): axis a of x is at dims.index(a)."""
        return Cross(self.space, self.col, self.heads, dims.index(self.head_axis),
                     dims.index(self.row_axis), dims.index(self.col_axis))


def is_scores(q, k, nd: int) -> bool:
    """q (…, H, d, N) @ k̂ᵀ (…, H, N, d): the tokens contracted, the head channels kept."""
    return q.dh_axis == nd - 2 and k.dh_axis == nd - 1 and q.head_axis == k.head_axis \
        and q.head_axis < nd - 2 and q.heads == k.heads


def scores(b: _Builder, n: fx.Node, q, k) -> Cross:
    """The (…, H, d, d) scores of query heads q and key heads k, their head permutation tied."""
    if len(q.spaces) != 1 or len(k.spaces) != 1:
        raise WeightlabError(f"{n.name}: channel attention of values that are not query/key "
                             f"heads")
    rq, rk = b.find(q.spaces[0]), b.find(k.spaces[0])
    if rq != rk:
        b.ties.append((rq, rk))
    return Cross(rq, rk, q.heads, q.head_axis, q.dh_axis, k.dh_axis)


def apply(b: _Builder, n: fx.Node, a: Cross, v, nd: int):
    """A (…, H, d, d) @ v (…, H, d, N): v's channels are the columns' (key·value) space; the
    result (…, H, d, N) carries the rows' (query·output) space, tokens last."""
    from weightlab.graph.heads import Heads

    if len(v.spaces) != 1 or v.dh_axis != nd - 2 or v.head_axis != a.head_axis \
            or a.col_axis != nd - 1 or a.row_axis != nd - 2 or v.heads != a.heads:
        raise WeightlabError(f"{n.name} (matmul): channel attention scores and values do not "
                             f"share their heads and channels")
    b.union(a.col, v.spaces[0], n)
    dh = b.size[b.find(a.space)] // a.heads
    return Heads((a.space,), a.heads, dh, None, a.head_axis, nd - 2)
