"""Exact linear assignment: the permutation maximising Σ_i score[i, perm[i]]."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from weightlab.errors import WeightlabError


def solve_assignment(score: torch.Tensor, what: str = "assignment") -> torch.Tensor:
    """``perm`` with perm[i] = column assigned to row i (Hungarian/LAPJV, on a CPU copy of the
    square ``score``; the score itself is built on the device). A NaN or infinite score is an
    error naming ``what`` (silently zeroing it would pick an arbitrary matching)."""
    s = score.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(s).all():
        bad = np.argwhere(~np.isfinite(s))[0]
        raise WeightlabError(f"{what}: the similarity matrix has {int((~np.isfinite(s)).sum())} "
                             f"non-finite entries (first at [{bad[0]}, {bad[1]}] = "
                             f"{s[bad[0], bad[1]]}); the models' weights or features hold NaN/inf")
    rows, cols = linear_sum_assignment(s, maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm)


def solve_grouped(scores: list[torch.Tensor], groups: int, what: str = "assignment"
                  ) -> list[torch.Tensor]:
    """Permutations of spaces made of ``groups`` equal blocks (attention heads) that map
    blocks onto blocks with ONE block permutation τ shared by all ``scores`` (tied spaces:
    an attention's query·key and value·output spaces), each space free within its blocks.

    Exact for this structure: for every pair of blocks (g, h) and every space k the best
    within-block assignment of A's block g to B's block h is a linear assignment with value
    v_k[g, h]; τ is the assignment maximising Σ_g Σ_k v_k[g, τ(g)]; perm_k puts B's block
    τ(g), reordered by its within-block assignment, at A's block g."""
    if groups <= 1:
        return [solve_assignment(s, what) for s in scores]
    # each space's own block size: tied spaces may differ (a rigid RoPE query·key space has
    # one unit per head, its value·output space head-dim channels per head)
    ds = [s.shape[0] // groups for s in scores]
    value = torch.zeros(groups, groups, dtype=torch.float64)
    inner: dict[tuple[int, int, int], torch.Tensor] = {}
    for k, s in enumerate(scores):
        s = s.detach().to("cpu", torch.float64)
        d = ds[k]
        for g in range(groups):
            for h in range(groups):
                block = s[g * d:(g + 1) * d, h * d:(h + 1) * d]
                p = solve_assignment(block, what)
                inner[(k, g, h)] = p
                value[g, h] += block[torch.arange(d), p].sum()
    tau = solve_assignment(value, what)
    return [torch.cat([tau[g] * ds[k] + inner[(k, g, int(tau[g]))] for g in range(groups)])
            for k in range(len(scores))]


def block_permutation(perm: torch.Tensor, groups: int, what: str = "permutation"
                      ) -> torch.Tensor:
    """τ of a permutation that maps ``groups`` equal blocks onto blocks (τ[g] = the block of B
    placed at block g); an error when ``perm`` splits a block."""
    d = len(perm) // groups
    tau = perm.reshape(groups, d) // d
    if not bool((tau == tau[:, :1]).all()):
        raise WeightlabError(f"{what}: the permutation moves channels between heads; a "
                             f"permutation of a space of {groups} heads must move whole heads")
    return tau[:, 0].clone()
