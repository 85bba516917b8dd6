"""Layer-wise OBS on one weight matrix W (rows × columns = outputs × inputs) with the layer
Hessian H = 2XXᵀ/n of its inputs X (columns × n): remove weights so that the layer's
reconstruction error ‖WX − ŴX‖²/n = ½ tr((W − Ŵ) H (W − Ŵ)ᵀ) grows least, moving the surviving
weights of each row to compensate. Rows are independent (they share H).

Optimal brain surgeon for one row w (Hassibi & Stork 1993; OBC eq. 3–4): removing weight q
costs  ΔE_q = ½ w_q² / [H⁻¹]_qq  after the optimal update  δ = −(w_q / [H⁻¹]_qq) · H⁻¹_{:,q}.

- :func:`exact_obs` — ExactOBS (Frantar & Alistarh 2022, *Optimal Brain Compression*, Alg. 1):
  remove the cheapest weight, apply δ, drop q from the problem with the rank-1 downdate
  H⁻¹ ← H⁻¹ − H⁻¹_{:,q} H⁻¹_{q,:} / [H⁻¹]_qq, repeat. Greedy and exact at every step;
  O(rows · d³) for d columns.
- :func:`sparsegpt` — SparseGPT (Frantar & Alistarh 2023, Alg. 1): visit the columns left to
  right; column j's weights are pruned or kept, and the error of the pruned ones is spread over
  the columns right of j only. The H⁻¹ that step needs, (H_{j:,j:})⁻¹, comes for every j at
  once from the upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU): row j of U is
  (H_{j:,j:})⁻¹_{j,:} / √[(H_{j:,j:})⁻¹]_jj. The masks are chosen per block of B columns
  ("adaptive mask selection") by w² / U_jj² = w² / [(H_{j:,j:})⁻¹]_jj, and updates outside the
  block are applied once per block (lazy batch). O(d³ + rows · d²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightlab_obs.pattern import level_counts, split_target


class SolverError(ValueError):
    """A layer problem the solver cannot handle (H not positive definite after damping)."""


@dataclass
class Solution:
    """The pruned weights (exact zeros where removed), the keep-mask (True = kept) and the
    OBS error per row, Σ ½ w_q² / [H⁻¹]_qq over the removed q (in the units of H)."""

    weight: torch.Tensor
    keep: torch.Tensor
    row_error: torch.Tensor


def damped(hessian: torch.Tensor, weight: torch.Tensor, damp: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """H + λI with λ = damp · mean(diag H) (SparseGPT's percdamp), after SparseGPT's treatment
    of dead inputs (diag H = 0: the input is 0 on every calibration sample): H_qq = 1 and
    W_{:,q} = 0, which changes no output on the calibration data. Returns (H, W), new tensors."""
    h = hessian.clone()
    w = weight.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    return h, w


def inverse(h: torch.Tensor) -> torch.Tensor:
    """H⁻¹ by Cholesky; a one-line SolverError when H is not positive definite."""
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        raise SolverError("the layer Hessian is not positive definite after damping "
                          "(raise damp, or use more calibration samples)")
    return torch.cholesky_inverse(chol)


def _group_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of each entry within its row (0 = lowest), ties by index."""
    order = torch.sort(scores, dim=1, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(
        scores.shape[1], device=scores.device).expand_as(order))


def nm_prune_group(scores: torch.Tensor, old_pruned: torch.Tensor, n: int) -> torch.Tensor:
    """Which weights of one group of M columns go (True = pruned), per row: the n lowest scores,
    and any weight already pruned (those stay pruned, counted among the n when they fit)."""
    k = torch.clamp(old_pruned.sum(1, keepdim=True), min=n)
    s = torch.where(old_pruned, torch.full_like(scores, -torch.inf), scores)
    return _group_ranks(s) < k


def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, *,
              zeros: int | None = None, nm: tuple[int, int] | None = None,
              block: int = 128, damp: float = 0.01) -> Solution:
    """SparseGPT on W (rows × d) with H (d × d, undamped); ``keep`` the existing mask (its
    False entries stay pruned and count towards the target). Unstructured: exactly ``zeros``
    weights go, split over the column blocks in proportion to their size
    (:func:`split_target`), the lowest w²/U_jj² of each block (over all its rows) first.
    N:M: in every group of M consecutive columns n weights of each row go (``block`` is rounded
    down to a multiple of M). Works in the dtype of ``weight``."""
    rows, d = weight.shape
    h, w = damped(hessian.to(weight.dtype), weight, damp)
    w = torch.where(keep, w, torch.zeros_like(w))
    # U: upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU)
    u = torch.linalg.cholesky(inverse(h), upper=True)
    pruned = torch.zeros_like(keep)
    losses = torch.zeros(rows, dtype=w.dtype, device=w.device)
    if nm is not None:
        n, m = nm
        if d % m:
            raise SolverError(f"{d} input columns are not a multiple of M = {m}")
        block = max(m, block // m * m)
    starts = list(range(0, d, block))
    if nm is None:
        if zeros is None:
            raise ValueError("sparsegpt: give zeros (unstructured) or nm")
        sizes = [rows * (min(i + block, d) - i) for i in starts]
        old = [int((~keep[:, i:i + block]).sum()) for i in starts]
        per_block = split_target(zeros, sizes, old)
    for b, i1 in enumerate(starts):
        i2 = min(i1 + block, d)
        w1 = w[:, i1:i2].clone()
        u1 = u[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        diag1 = torch.diagonal(u1)
        prune1 = torch.zeros_like(w1, dtype=torch.bool)
        if nm is None:  # adaptive mask selection: the block's lowest w²/U_jj² over all rows
            scores = (w1.square() / diag1.square()).flatten()
            scores = torch.where(keep[:, i1:i2].flatten(), scores,
                                 torch.full_like(scores, -torch.inf))
            gone = torch.sort(scores, stable=True).indices[:per_block[b]]
            prune1.view(-1)[gone] = True
        for j in range(i2 - i1):
            if nm is not None and j % nm[1] == 0:
                sl = slice(j, j + nm[1])
                prune1[:, sl] = nm_prune_group(w1[:, sl].square() / diag1[sl].square(),
                                               ~keep[:, i1:i2][:, sl], nm[0])
            col = w1[:, j]
            q = torch.where(prune1[:, j], torch.zeros_like(col), col)
            e = (col - q) / u1[j, j]  # (w_j − q_j) / U_jj
            losses += e.square() / 2  # ΔE = ½ w_j² / [(H_{j:,j:})⁻¹]_jj
            # δ = −(w_j / [H_F⁻¹]_jj) (H_F⁻¹)_{j,:} = −e · U_{j,:} on the columns right of j
            w1[:, j:] -= e[:, None] * u1[j, j:][None, :]
            w1[:, j] = q
            err1[:, j] = e
        w[:, i1:i2] = w1
        pruned[:, i1:i2] = prune1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]  # the block's updates to the later columns, at once
    keep_new = ~pruned
    return Solution(torch.where(keep_new, w, torch.zeros_like(w)), keep_new, losses)


def exact_obs(weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, *,
              zeros: int | None = None, counts: list[int] | None = None,
              nm: tuple[int, int] | None = None, damp: float = 0.0,
              row_batch: int = 64) -> Solution:
    """ExactOBS on W (rows × d) with H (d × d, undamped): per row, greedily remove the weight of
    least ΔE_q = ½ w_q² / [H⁻¹]_qq, update the row by δ, downdate H⁻¹, repeat. Weights already
    pruned (``keep`` False) are held at 0 by starting from the inverse of H restricted to the
    free weights. How many go per row: ``counts`` (total zeros, old ones included), or
    ``zeros`` spread over the rows as evenly as their old zeros allow (:func:`level_counts`);
    with ``nm`` each row loses n weights of every group of M columns (groups already holding n
    zeros are closed). ``row_batch`` rows are solved at once (memory row_batch · d²)."""
    rows, d = weight.shape
    h, w = damped(hessian.to(weight.dtype), weight, damp)
    w = torch.where(keep, w, torch.zeros_like(w))
    old = (~keep).sum(1).tolist()
    if nm is not None:
        n, m = nm
        if d % m:
            raise SolverError(f"{d} input columns are not a multiple of M = {m}")
        groups = (~keep).view(rows, d // m, m).sum(2)
        counts = (torch.clamp(n - groups, min=0).sum(1) + (~keep).sum(1)).tolist()
    elif counts is None:
        if zeros is None:
            raise ValueError("exact_obs: give zeros, counts or nm")
        counts = level_counts(zeros, old, d)
    hinv_all = inverse(h) if bool(keep.all()) else None
    out_w, out_keep, out_err = [], [], []
    for r1 in range(0, rows, row_batch):
        r2 = min(r1 + row_batch, rows)
        wb, kb = w[r1:r2].clone(), keep[r1:r2].clone()
        if hinv_all is not None:
            hinv = hinv_all.expand(r2 - r1, d, d).contiguous()
        else:  # inverse of H with the pruned coordinates decoupled: blockdiag(H_FF⁻¹, I)
            free = kb[:, :, None] & kb[:, None, :]
            eye = torch.eye(d, dtype=h.dtype, device=h.device).expand_as(free)
            hb = torch.where(free, h.expand_as(free), eye)
            chol, info = torch.linalg.cholesky_ex(hb)
            if int(info.abs().sum()) != 0:
                raise SolverError("the layer Hessian is not positive definite after damping "
                                  "(raise damp, or use more calibration samples)")
            hinv = torch.cholesky_inverse(chol).contiguous()
        need = torch.tensor(counts[r1:r2], device=w.device) - (~kb).sum(1)
        err = torch.zeros(r2 - r1, dtype=w.dtype, device=w.device)
        rows_b = torch.arange(r2 - r1, device=w.device)
        for _ in range(int(need.max()) if len(need) else 0):
            active = need > 0
            diag = torch.diagonal(hinv, dim1=1, dim2=2)
            eligible = kb.clone()
            if nm is not None:  # groups that already hold n zeros are closed
                full = ((~kb).view(-1, d // m, m).sum(2) >= n)
                eligible &= ~full.repeat_interleave(m, dim=1)
            scores = torch.where(eligible, wb.square() / diag,
                                 torch.full_like(wb, torch.inf))
            q = scores.argmin(1)  # lowest index among ties
            # H⁻¹_{q,:} = H⁻¹_{:,q} (symmetric), per row; index_select: hinv[rows_b, q] is
            # ~100× slower on the CPU
            hq = hinv.view(-1, d).index_select(0, rows_b * d + q)
            dq = hq[rows_b, q]
            coef = torch.where(active, wb[rows_b, q] / dq, torch.zeros_like(dq))
            err += torch.where(active, scores[rows_b, q] / 2, torch.zeros_like(dq))
            wb -= coef[:, None] * hq  # δ = −(w_q / [H⁻¹]_qq) H⁻¹_{:,q}
            # H⁻¹ ← H⁻¹ − H⁻¹_{:,q} H⁻¹_{q,:} / [H⁻¹]_qq  (q leaves the problem)
            scale = torch.where(active, 1.0 / dq, torch.zeros_like(dq))
            hinv.baddbmm_((hq * scale[:, None]).unsqueeze(2), hq.unsqueeze(1), alpha=-1)
            act = rows_b[active]
            wb[act, q[active]] = 0.0
            kb[act, q[active]] = False
            need -= active.long()
        out_w.append(torch.where(kb, wb, torch.zeros_like(wb)))
        out_keep.append(kb)
        out_err.append(err)
    return Solution(torch.cat(out_w), torch.cat(out_keep), torch.cat(out_err))


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor
                         ) -> float:
    """Relative layer error ‖WX − ŴX‖² / ‖WX‖² = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) with the undamped H."""
    delta = weight - pruned
    num = float(torch.einsum("ri,ij,rj->", delta, hessian, delta))
    den = float(torch.einsum("ri,ij,rj->", weight, hessian, weight))
    return num / den if den > 0 else 0.0
