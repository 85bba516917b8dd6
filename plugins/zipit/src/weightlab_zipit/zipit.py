"""ZipIt! matching (Stoica et al. 2024, "ZipIt! Merging Models from Different Tasks without
Training", §4): greedy pairwise merging of the 2C features of two models down to C.

Per channel space, with the correlation matrix S (2C × 2C) of A's and B's features side by
side: repeatedly take the most correlated pair (i, j) of live features — within or across
models — and zip it into one feature; the zipped feature's row and column of S become
a·min(S_i, S_j) (α of the paper: a > 0 lets a zipped feature be zipped again, discounted);
at a ≤ 0 they become −∞ against every feature of the members' models, as upstream's
``a <= 0`` branch does: a cross-model feature is final, a within-model pair may still meet
the other model once (so at most two members per model);
each model may zip at most ⌊(C/2)·b⌋ pairs of its own features (β of the paper: b = 0 allows
cross-model merges only). After C merges C features remain. With the assignment matrix
U (2C × C, U[f, c] = 1 when feature f belongs to merged feature c):

    unmerge = U,   merge = (U / column sums)ᵀ  (C × 2C: a merged feature is the mean of its
                                                 members)
"""

from __future__ import annotations

import torch


@torch.no_grad()
def zip_match(corr: torch.Tensor, a: float = 0.3, b: float = 0.125
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(merge C × 2C, unmerge 2C × C) from the joint correlation matrix ``corr`` (2C × 2C;
    rows/columns 0…C−1 are model A's features, C…2C−1 model B's).

    The greedy loop is sequential by definition (every merge changes the matrix the next one
    is chosen from). Instead of deleting a zipped-away feature's row and column (the reference
    code's O(C²) copies per merge) they are set to −∞, the survivor keeps the lower index, and
    each row's maximum is kept up to date, so one merge costs O(C) on the device plus the rows
    whose maximum it removed. A merged feature's index is its smallest member's; merged
    features come out in that order (A's order when B is zipped onto A).
    """
    n = corr.shape[0]
    if corr.dim() != 2 or corr.shape[1] != n or n % 2:
        raise ValueError(f"zip_match: expected a square 2C × 2C matrix, got {list(corr.shape)}")
    c = n // 2
    neg_inf = float("-inf")
    sims = torch.nan_to_num(corr.to(torch.float32), nan=0.0).clone()
    sims.fill_diagonal_(neg_inf)
    origin = torch.arange(n, device=sims.device) // c  # 0: model A, 1: model B
    # Budget per model as in the reference code: ⌊(to_remove / models)·b⌋ with to_remove = C.
    # Deviation: the reference blocks a model's within-model pairs only once a within-model
    # merge has brought its budget to ≤ 0, so b = 0 still allowed one such merge; here a
    # budget of 0 blocks them from the start: b = 0 means cross-model merges only.
    budget = [int((c // 2) * b + 1e-4)] * 2
    for m in (0, 1):
        if budget[m] <= 0:
            sims[m * c:(m + 1) * c, m * c:(m + 1) * c] = neg_inf
    row_max, row_arg = _row_max(sims)
    labels = torch.arange(n, device=sims.device)  # each feature's merged feature
    for _ in range(c):
        i = int(row_max.argmax())
        j = int(row_arg[i])
        lo, hi = min(i, j), max(i, j)
        row = torch.minimum(sims[lo], sims[hi])  # −∞ at lo and hi (the diagonal)
        if a > 0:
            row.mul_(a)  # α: the zipped feature may be zipped again, at a discount
        else:  # α ≤ 0: never again with a feature of either member's model (upstream)
            row.masked_fill_((origin == lo // c) | (origin == hi // c), neg_inf)
        sims[lo], sims[:, lo] = row, row
        sims[hi], sims[:, hi] = neg_inf, neg_inf
        labels[labels == hi] = lo
        if lo // c == hi // c:  # a within-model merge spends that model's budget
            m = lo // c
            budget[m] -= 1
            if budget[m] <= 0:
                sims[m * c:(m + 1) * c, m * c:(m + 1) * c] = neg_inf
                row_max, row_arg = _row_max(sims)
                continue
        # Row maxima: column lo changed and column hi fell to −∞ in every row.
        stale = (row_arg == lo) | (row_arg == hi)
        stale[lo] = True
        up = row > row_max
        row_max = torch.where(up, row, row_max)
        row_arg = torch.where(up, lo, row_arg)
        idx = stale.nonzero().squeeze(1)
        fresh_max, fresh_arg = _row_max(sims.index_select(0, idx))
        row_max[idx], row_arg[idx] = fresh_max, fresh_arg
    keep = torch.unique(labels)  # the C survivors, ascending
    unmerge = (labels[:, None] == keep[None, :]).float()
    merge = (unmerge / unmerge.sum(0, keepdim=True)).T.contiguous()
    return merge, unmerge


def constant_features_alike(corr: torch.Tensor, var: torch.Tensor, rel: float = 1e-10
                            ) -> torch.Tensor:
    """Correlations with constant features (variance ≤ rel × the largest, e.g. dead ReLUs)
    made unambiguous. Their correlation is undefined; the reference code's 0 with everything
    ties them with every zipped feature (a·0), so a dead feature can join a live pair and
    leave a live one unmatched. Two constant features carry the same (no) signal and zipping
    them loses nothing: they correlate 1 here, and 0 with the rest as before."""
    const = var <= rel * var.max().clamp_min(torch.finfo(var.dtype).tiny)
    return corr.masked_fill(const[:, None] & const[None, :], 1.0)


def _row_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's maximum and its first column (argmax + gather: ``Tensor.max(dim)`` is many
    times slower on CPU)."""
    arg = x.argmax(1)
    return x.gather(1, arg[:, None])[:, 0], arg
