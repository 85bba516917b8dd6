"""Git Re-Basin weight matching (Ainsworth, Hayase & Srinivasa, ICLR 2023, Algorithm 1).

Maximise Σ over every tensor ⟨W_A, P(W_B)⟩ over the free spaces' permutations by coordinate
descent: for space p, with every other permutation held fixed,

    S_p = Σ_{entries (W, axis) of p} W_A(p-axis as rows) · W̃_B(p-axis as rows)ᵀ

where W̃_B has the other spaces' current permutations applied on its other axes; the best
permutation of p alone is the linear assignment maximising Σ_i S_p[i, perm[i]]. Spaces are
visited in a seeded random order, a fresh order each sweep, until a sweep improves nothing.
Norm weights and biases are entries, so they count in the objective; BatchNorm running
statistics count only with ``include_bn_stats`` (the reference code leaves them out).
"""

from __future__ import annotations

import torch

from weightlab.alignment import Alignment, permute_axis
from weightlab.graph.spaces import FeatureGraph
from weightlab.matching.assignment import solve_assignment


def visit_orders(n_spaces: int, seed: int):
    """The space visiting order of each sweep (shared with the benchmark's reference)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randperm(n_spaces, generator=gen).tolist()


def rows(w: torch.Tensor, axis: int, repeat: int = 1) -> torch.Tensor:
    """w as a (C, ·) matrix with the channels of ``axis`` as rows (a flattened channel's
    ``repeat`` columns stay in its row)."""
    return w.movedim(axis, 0).reshape(w.shape[axis] // repeat, -1)


def weight_matching(graph: FeatureGraph, state_a: dict[str, torch.Tensor],
                    state_b: dict[str, torch.Tensor], *, max_iter: int = 100, seed: int = 0,
                    tol: float = 1e-12, dtype: torch.dtype = torch.float64,
                    include_bn_stats: bool = False) -> Alignment:
    """The alignment of B to A. Exactly the coordinate descent above; two facts save work
    without changing any number: S_p depends only on the *other* spaces' permutations, so a
    tensor's contribution is recomputed only when the permutation of one of its other axes
    changed, and a space whose S_p is unchanged since its last visit keeps its assignment."""
    counted = (lambda key: True) if include_bn_stats else (lambda key: not is_bn_stat(key))
    free = graph.free_spaces()
    axes = {k: v for k, v in graph.param_axes().items() if counted(k)}  # key → {axis: …}
    device = next(iter(state_a.values())).device
    a_rows = {(e.key, e.axis): rows(state_a[e.key].to(device, dtype), e.axis, e.repeat)
              for s in free for e in s.entries if counted(e.key)}
    b_full = {key: state_b[key].to(device, dtype) for key in axes}
    base, coupled = {}, {}  # S_p's constant part (tensors with one permuted axis); the rest
    for s in free:
        base[s.id] = torch.zeros(s.size, s.size, dtype=dtype, device=device)
        coupled[s.id] = []
        for e in s.entries:
            if not counted(e.key):
                continue
            others = [(ax, t, r) for ax, (t, r) in axes[e.key].items() if ax != e.axis]
            if others:
                coupled[s.id].append((e, others))
            else:
                base[s.id].addmm_(a_rows[(e.key, e.axis)], rows(b_full[e.key], e.axis,
                                                                 e.repeat).T)
    perms = {s.id: torch.arange(s.size, device=device) for s in free}
    version = dict.fromkeys(perms, 0)  # bumped whenever a space's permutation changes
    cache: dict[tuple[str, int], tuple[tuple[int, ...], torch.Tensor]] = {}
    solved_at: dict[int, tuple[int, ...]] = {}
    sweeps = 0
    for sweeps, order in enumerate(visit_orders(len(free), seed), start=1):
        progress = False
        for i in order:
            space = free[i]
            stamp = tuple(version[t] for _, others in coupled[space.id] for _, t, _ in others)
            if solved_at.get(space.id) == stamp:
                continue  # S_p unchanged since its last assignment: the same optimum
            score = base[space.id].clone()
            for e, others in coupled[space.id]:
                key = tuple(version[t] for _, t, _ in others)
                hit = cache.get((e.key, e.axis))
                if hit is None or hit[0] != key:
                    w = b_full[e.key]
                    for ax, t, r in others:
                        w = permute_axis(w, ax, perms[t], r)
                    hit = (key, a_rows[(e.key, e.axis)] @ rows(w, e.axis, e.repeat).T)
                    cache[(e.key, e.axis)] = hit
                score += hit[1]
            perm = solve_assignment(score, what=f"weight matching, channel space {space.id}"
                                    ).to(device)
            diag = torch.arange(space.size, device=device)
            old, new = score[diag, perms[space.id]].sum(), score[diag, perm].sum()
            progress |= float(new - old) > tol * max(1.0, abs(float(old)))
            if not torch.equal(perm, perms[space.id]):
                perms[space.id] = perm
                version[space.id] += 1
            solved_at[space.id] = stamp
        if not progress or sweeps >= max_iter:
            break
    out = Alignment({s: p.cpu() for s, p in perms.items()})
    out.info.update(matcher="weight", sweeps=sweeps,
                    objective=weight_objective(graph, state_a, out.apply(graph, state_b),
                                               include_bn_stats))
    return out


def is_bn_stat(key: str) -> bool:
    return key.endswith((".running_mean", ".running_var"))


def weight_objective(graph: FeatureGraph, state_a: dict[str, torch.Tensor],
                     state_b: dict[str, torch.Tensor], include_bn_stats: bool = False
                     ) -> float:
    """Σ ⟨W_A, W_B⟩ over every tensor a free space touches (float64), BatchNorm running
    statistics only with ``include_bn_stats``."""
    total = torch.zeros((), dtype=torch.float64)
    for key in graph.param_axes():
        if not include_bn_stats and is_bn_stat(key):
            continue
        a, b = state_a[key].double(), state_b[key].to(state_a[key].device).double()
        total += (a * b).sum().cpu()
    return float(total)
