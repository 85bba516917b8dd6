"""A faithful port of the upstream ZipIt! loop (gstoica27/ZipIt, matching_functions.py,
``match_tensors_zipit``) for two models (r = ½), written for the tests and the benchmark: it
deletes the zipped column and row and argmaxes the whole matrix each step, blocks a model's
within-model pairs when its budget ⌊(C/2)·b⌋ reaches ≤ 0 after a within-model merge, and at
a ≤ 0 sets the zipped feature's similarity to −∞ with every feature of both members' models
(upstream's ``a <= 0`` branch). Returns the assignment (unmerge) matrix, 2C × C."""

from __future__ import annotations

import torch


def _remove_col(x: torch.Tensor, idx: int) -> torch.Tensor:
    return torch.cat([x[:, :idx], x[:, idx + 1:]], dim=-1)


def upstream_zip(corr: torch.Tensor, a: float = 0.3, b: float = 0.125) -> torch.Tensor:
    sims = corr.clone().float()
    big_o = sims.shape[0]
    r = 0.5
    remainder = int(big_o * (1 - r) + 1e-4)
    perm = torch.eye(big_o, big_o)
    torch.diagonal(sims)[:] = -torch.inf
    num_models = int(1 / (1 - r) + 0.5)
    om = big_o // num_models
    original_model = torch.zeros(big_o).long()
    for i in range(num_models):
        original_model[i * om:(i + 1) * om] = i
    to_remove = perm.shape[1] - remainder
    budget = torch.zeros(num_models).long() + int((to_remove // num_models) * b + 1e-4)
    while perm.shape[1] > remainder:
        best = sims.reshape(-1).argmax()
        row_idx = int(best % sims.shape[1])
        col_idx = int(best // sims.shape[1])
        if col_idx < row_idx:
            row_idx, col_idx = col_idx, row_idx
        row_origin = original_model[row_idx]
        col_origin = original_model[col_idx]
        perm[:, row_idx] += perm[:, col_idx]
        perm = _remove_col(perm, col_idx)
        sims[:, row_idx] = torch.minimum(sims[:, row_idx], sims[:, col_idx])
        if a <= 0:
            sims[row_origin * om:(row_origin + 1) * om, row_idx] = -torch.inf
            sims[col_origin * om:(col_origin + 1) * om, row_idx] = -torch.inf
        else:
            sims[:, row_idx] *= a
        sims = _remove_col(sims, col_idx)
        sims[row_idx, :] = torch.minimum(sims[row_idx, :], sims[col_idx, :])
        if a <= 0:
            sims[row_idx, row_origin * om:(row_origin + 1) * om] = -torch.inf
            sims[row_idx, col_origin * om:(col_origin + 1) * om] = -torch.inf
        else:
            sims[row_idx, :] *= a
        sims = _remove_col(sims.T, col_idx).T
        row_origin, col_origin = original_model[row_idx], original_model[col_idx]
        original_model = _remove_col(original_model[None, :], col_idx)[0]
        if row_origin == col_origin:
            origin = original_model[row_idx].item()
            budget[origin] -= 1
            if budget[origin] <= 0:
                selector = original_model == origin
                sims[selector[:, None] & selector[None, :]] = -torch.inf
    return perm
