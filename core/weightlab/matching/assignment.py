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
