"""K-model alignment into one shared space, and the cycle error of pairwise alignments.

Conventions: an alignment A_k maps model k into the shared space (``A_k.apply`` gives model k's
tensors in the shared channel order; its permutation matrix P_k has P_k[i, perm[i]] = 1). The
pairwise map from model j to model i is then P_ij = P_iᵀ P_j (``pairwise``), and for any
triple P_ij P_jk = P_ik: cycle-consistent by construction.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from weightlab.alignment import Alignment, transform_axis
from weightlab.errors import UsageError
from weightlab.matching.assignment import solve_assignment
from weightlab.matching.weight import is_bn_stat, rows, weight_matching, weight_objective


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


# ---- MergeMany -----------------------------------------------------------------------------
def merge_many(graph: Any, states: Sequence[dict[str, torch.Tensor]], *, max_iter: int = 100,
               seed: int = 0, include_bn_stats: bool = False, tol: float = 1e-12
               ) -> tuple[list[Alignment], dict[str, Any]]:
    """MergeMany (Ainsworth et al. 2023, Algorithm 3; ``match_many`` of the authors'
    ``mnist_mlp_wm_many.py``): repeat rounds — for each model k in a fresh seeded random
    order, weight-match the *currently aligned* θ_k to the mean θ̄_{-k} of the other aligned
    models and replace θ_k by the result — until a round in which no step brings any model
    closer to the mean of the others, i.e. ‖θ̄_{-k} − θ_k‖² falls by at most
    ``tol``·max(1, ⟨θ̄_{-k}, θ_k⟩) for every k (or ``max_iter`` rounds).

    Warm start: weight matching starts from the identity of the already aligned model, i.e.
    from the current permutations, so a step can only improve ⟨θ̄_{-k}, P θ_k⟩ and the rounds
    settle. (Re-matching the *original* θ_k from scratch every round, each time with a new
    seed, lands in a different local optimum each time and never settles.) Since permutations
    keep ‖θ_k‖, the squared distance falls exactly by 2·(gain in ⟨θ̄_{-k}, P θ_k⟩).

    Returns A_k of every model into the shared space (the composition of its steps) and the
    rounds run, whether the last round made no progress, and the steps that changed a
    permutation."""
    n = len(states)
    keys = [k for k in graph.param_axes() if include_bn_stats or not is_bn_stat(k)]
    als = [Alignment.identity(graph) for _ in states]
    aligned = [dict(s) for s in states]
    order_gen = torch.Generator().manual_seed(seed)
    rounds, converged, changes = 0, False, 0
    for rounds in range(1, max_iter + 1):
        progress = False
        for k in torch.randperm(n, generator=order_gen).tolist():
            others = [aligned[j] for j in range(n) if j != k]
            target = {key: sum(o[key].double() for o in others) / len(others) for key in keys}
            before = weight_objective(graph, target, aligned[k], include_bn_stats)
            step = weight_matching(graph, target, aligned[k], seed=seed * 7919 + rounds * n + k,
                                   include_bn_stats=include_bn_stats)
            if step.info["objective"] - before > tol * max(1.0, abs(before)):
                progress = True
            if any(not torch.equal(p, torch.arange(len(p))) for p in step.perms.values()):
                changes += 1
                als[k] = step.compose(als[k])
                aligned[k] = step.apply(graph, aligned[k])
        if not progress:
            converged = True
            break
    return als, {"rounds": rounds, "converged": converged, "changed_steps": changes}


# ---- C2M3 ----------------------------------------------------------------------------------
class _Problem:
    """f(P) = Σ_{i<j} ⟨T_{P_i}(θ_i), T_{P_j}(θ_j)⟩ over every tensor a permuted space touches,
    where T_P applies P_k^s (a doubly stochastic C×C matrix) along each axis of space s."""

    def __init__(self, graph, states, include_bn_stats, dtype):
        self.spaces = [s for s in graph.free_spaces() if s.groups == 1]
        ids = {s.id for s in self.spaces}
        self.axes = {}
        for key, entries in graph.param_axes().items():
            if not include_bn_stats and is_bn_stat(key):
                continue
            kept = [(sid, e) for sid, e in entries if sid in ids and not e.per_group]
            if kept:
                self.axes[key] = kept
        self.size = {s.id: s.size for s in self.spaces}
        self.w = [{key: s[key].to("cpu", dtype) for key in self.axes} for s in states]
        self.degree = 2 * max((len(v) for v in self.axes.values()), default=1)

    def transform(self, w, key, mats, skip=None):
        for sid, e in self.axes[key]:
            if (sid, e) != skip:
                w = transform_axis(w, e.axis, mats[sid], e.repeat, e.offset)
        return w

    def universe(self, k, mats):
        return {key: self.transform(self.w[k][key], key, mats) for key in self.axes}

    def objective(self, mats_all):
        us = [self.universe(k, m) for k, m in enumerate(mats_all)]
        return self._objective(us), us

    def _objective(self, us):
        total = 0.0
        for key in self.axes:
            stack = torch.stack([u[key] for u in us])
            total += float((stack.sum(0).square().sum() - stack.square().sum()) / 2)
        return total

    def gradient(self, k, mats, us, total):
        """∂f/∂P_k^s for every space s: Σ over s's entries of (Σ_{j≠k} U_j)·(θ_k with k's
        other axes mapped)ᵀ, both with s's axis as rows."""
        grads = {s.id: torch.zeros(s.size, s.size, dtype=mats[s.id].dtype)
                 for s in self.spaces}
        for key, entries in self.axes.items():
            rest = total[key] - us[k][key]
            for sid, e in entries:
                part = self.transform(self.w[k][key], key, mats, skip=(sid, e))
                n = self.size[sid]
                grads[sid] += rows(rest, e.axis, e.repeat, e.offset, n) @ \
                    rows(part, e.axis, e.repeat, e.offset, n).T
        return grads


def c2m3(graph: Any, states: Sequence[dict[str, torch.Tensor]], *,
         init: Sequence[Alignment] | None = None, max_iter: int = 100, tol: float = 1e-6,
         step: str = "line", include_bn_stats: bool = False, fix_first: bool = True,
         dtype=torch.float32) -> tuple[list[Alignment], dict[str, Any]]:
    """C2M3 (Crisostomi et al. 2024): maximise f(P_1..P_K) = Σ_{i<j} Σ_l ⟨P_i^l W_i^l P_i^{l-1}ᵀ,
    P_j^l W_j^l P_j^{l-1}ᵀ⟩ (every tensor, every axis in a permuted space) over each model's
    map P_k^s into a shared universe, relaxed to the Birkhoff polytope, by Frank–Wolfe: at
    iterate t take the gradient G_k^s = ∂f/∂P_k^s, the vertex S_k^s = argmax_{S ∈ perms} ⟨G, S⟩
    (one linear assignment per model per space), and move P ← P + γ(S − P) with γ the exact
    maximiser of the polynomial f(P + γD) on [0, 1] (``step="line"``) or 2/(t+2)
    (``step="harmonic"``); stop when the Frank–Wolfe gap ⟨G, S − P⟩ falls below ``tol``·|f|.
    Then project each P_k^s to the nearest permutation (an assignment maximising ⟨P, Π⟩).
    The pairwise maps P_iᵀP_j are cycle-consistent by construction. Head spaces (groups > 1)
    stay identity."""
    prob = _Problem(graph, states, include_bn_stats, dtype)
    n = len(states)
    mats = []
    for k in range(n):
        start = init[k] if init is not None else Alignment.identity(graph)
        mats.append({s.id: start.matrices(s.id, s.size)[0].to(dtype) for s in prob.spaces})
    f, us = prob.objective(mats)
    f_start, gap, it = f, float("inf"), 0
    for it in range(1, max_iter + 1):
        total = {key: sum(u[key] for u in us) for key in prob.axes}
        dirs, gap = [], 0.0
        for k in range(n):
            if fix_first and k == 0:  # the universe is defined up to one permutation
                dirs.append({sid: torch.zeros_like(m) for sid, m in mats[0].items()})
                continue
            grads = prob.gradient(k, mats[k], us, total)
            d = {}
            for sid, g in grads.items():
                vertex = torch.zeros_like(g)
                vertex[torch.arange(len(g)), solve_assignment(g, f"c2m3, space {sid}")] = 1.0
                d[sid] = vertex - mats[k][sid]
                gap += float((g * d[sid]).sum())
            dirs.append(d)
        if gap <= tol * max(1.0, abs(f)):
            break
        def moved(g, mats=mats, dirs=dirs):
            return [{s: m[s] + g * d[s] for s in m} for m, d in zip(mats, dirs, strict=True)]

        if step == "line":
            ts = np.linspace(0.0, 1.0, prob.degree + 1)
            vals = [f] + [prob.objective(moved(float(t)))[0] for t in ts[1:]]
            poly = np.polyfit(ts, vals, prob.degree)
            grid = np.linspace(0.0, 1.0, 1001)
            gamma = float(grid[np.argmax(np.polyval(poly, grid))])
        else:
            gamma = 2.0 / (it + 2)
        if gamma <= 0.0:
            break
        mats = moved(gamma)
        f, us = prob.objective(mats)
    als = []
    for m in mats:
        al = Alignment.identity(graph)
        for sid, p in m.items():
            al.perms[sid] = solve_assignment(p, f"c2m3 projection, space {sid}")
        als.append(al)
    f_proj = prob.objective([{s.id: al.matrices(s.id, s.size)[0].to(dtype)
                              for s in prob.spaces} for al in als])[0]
    return als, {"iterations": it, "fw_gap": gap, "objective_start": f_start,
                 "objective_relaxed": f, "objective": f_proj}
