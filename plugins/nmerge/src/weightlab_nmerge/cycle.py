"""Frames of K alignments into one shared space, and the cycle error of pairwise alignments.

Conventions: an alignment A_k maps model k into the shared space (``A_k.apply`` gives model k's
tensors in the shared channel order; its permutation matrix P_k has P_k[i, perm[i]] = 1). The
pairwise map from model j to model i is then P_ij = P_iᵀ P_j (``pairwise``), and for any
triple P_ij P_jk = P_ik: cycle-consistent by construction.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from weightlab.alignment import Alignment
from weightlab.errors import UsageError


# ---- frames and the cycle error ------------------------------------------------------------
def relative_to_first(alignments: Sequence[Alignment]) -> list[Alignment]:
    """The same shared space re-expressed in model 1's channel order: A_1⁻¹ ∘ A_k (model 1
    then needs no change; the merge is the same up to that one permutation)."""
    back = alignments[0].inverse()
    out = [back.compose(a) for a in alignments]
    for a, src in zip(out, alignments, strict=True):
        a.info = dict(src.info)
    return out


def pairwise(alignments: Sequence[Alignment]) -> dict[tuple[int, int], Alignment]:
    """P_ij = A_i⁻¹ ∘ A_j (model j into model i's order) for every i < j."""
    return {(i, j): alignments[i].inverse().compose(alignments[j])
            for i, j in itertools.combinations(range(len(alignments)), 2)}


def cycle_error(maps: dict[tuple[int, int], Alignment], n_models: int) -> float:
    """Fraction of channels, over every triple i < j < k and every permuted space, where
    P_ij ∘ P_jk ≠ P_ik (``maps[(i, j)]`` aligns model j to model i). 0 for alignments through
    one shared space; pairwise matching of each pair on its own gives no such guarantee."""
    if n_models < 3:
        raise UsageError(f"the cycle error needs at least 3 models, got {n_models}")
    bad = total = 0
    for i, j, k in itertools.combinations(range(n_models), 3):
        via, direct = maps[(i, j)].compose(maps[(j, k)]), maps[(i, k)]
        for s, perm in direct.perms.items():
            bad += int((via.perms[s] != perm).sum())
            total += len(perm)
    return bad / total if total else 0.0
