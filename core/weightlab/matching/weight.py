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

from collections.abc import Callable

import torch

from weightlab.alignment import Alignment, permute_axis
from weightlab.graph.spaces import Entry, FeatureGraph, Space
from weightlab.matching.assignment import block_permutation, solve_grouped


def visit_orders(n_spaces: int, seed: int):
    """The space visiting order of each sweep (shared with the benchmark's reference)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randperm(n_spaces, generator=gen).tolist()


def rows(w: torch.Tensor, axis: int, repeat: int = 1, offset: int = 0, n: int | None = None
         ) -> torch.Tensor:
    """w as a (C, ·) matrix with the channels of ``axis`` as rows (a flattened channel's
    ``repeat`` columns stay in its row); in a packed tensor, the n·repeat indices from
    ``offset`` on."""
    if n is not None and (offset or n * repeat != w.shape[axis]):
        w = w.narrow(axis, offset, n * repeat)
    return w.movedim(axis, 0).reshape(w.shape[axis] // repeat, -1)


def weight_matching(graph: FeatureGraph, state_a: dict[str, torch.Tensor],
                    state_b: dict[str, torch.Tensor], *, max_iter: int = 100, seed: int = 0,
                    tol: float = 1e-12, dtype: torch.dtype = torch.float64,
                    include_bn_stats: bool = False,
                    init: dict[int, torch.Tensor] | None = None,
                    similarity: Callable[[Space, torch.Tensor], torch.Tensor] | None = None
                    ) -> Alignment:
    """The alignment of B to A. Exactly the coordinate descent above; two facts save work
    without changing any number: S_p depends only on the *other* spaces' permutations, so a
    tensor's contribution is recomputed only when the permutation of one of its other axes
    changed, and a space whose S_p is unchanged since its last visit keeps its assignment.

    Attention head spaces (``groups`` > 1) are solved by :func:`solve_grouped`; spaces tied by
    a shared head permutation (query·key and value·output) are visited together as one unit.
    Per-head entries (relative position bias tables) are left out of S_p.

    Hooks for matchers built on this descent (both default to plain weight matching):
    ``init`` — starting permutations by space id (identity elsewhere); ``similarity(space,
    S_p)`` — the matrix actually assigned instead of S_p (same shape; e.g. a normalized S_p
    mixed with a fixed activation similarity, as MuDSC does). The sweep's progress test then
    compares that matrix's assigned sums."""
    counted = (lambda key: True) if include_bn_stats else (lambda key: not is_bn_stat(key))
    units = graph.units()
    free = [s for unit in units for s in unit]
    by_key = {k: v for k, v in graph.param_axes().items() if counted(k)}
    device = next(iter(state_a.values())).device
    b_full = {key: state_b[key].to(device, dtype) for key in by_key}

    def entry_rows(w, s, e):
        return rows(w, e.axis, e.repeat, e.offset, s.size)

    a_rows = {(s.id, e): entry_rows(state_a[e.key].to(device, dtype), s, e)
              for s in free for e in s.entries if counted(e.key) and not e.per_group}
    base, coupled = {}, {}  # S_p's constant part (tensors with one permuted axis); the rest
    for s in free:
        base[s.id] = torch.zeros(s.size, s.size, dtype=dtype, device=device)
        coupled[s.id] = []
        for e in s.entries:
            if not counted(e.key) or e.per_group:
                continue
            others = [(t, o) for t, o in by_key[e.key] if o.axis != e.axis]
            if others:
                coupled[s.id].append((e, others))
            else:
                base[s.id].addmm_(a_rows[(s.id, e)], entry_rows(b_full[e.key], s, e).T)
    perms = {s.id: torch.arange(s.size, device=device) for s in free}
    for sid, p in (init or {}).items():
        if sid in perms:
            perms[sid] = p.to(device)
    version = dict.fromkeys(perms, 0)  # bumped whenever a space's permutation changes
    cache: dict[tuple[int, Entry], tuple[tuple[int, ...], torch.Tensor]] = {}
    solved_at: dict[int, tuple[int, ...]] = {}

    def score_of(space):
        score = base[space.id].clone()
        for e, others in coupled[space.id]:
            key = tuple(version[t] for t, _ in others)
            hit = cache.get((space.id, e))
            if hit is None or hit[0] != key:
                w = b_full[e.key]
                for t, o in others:
                    p = perms[t]
                    if o.per_group:
                        p = block_permutation(p, graph[t].groups)
                    w = permute_axis(w, o.axis, p, o.repeat, o.offset)
                hit = (key, a_rows[(space.id, e)] @ entry_rows(w, space, e).T)
                cache[(space.id, e)] = hit
            score += hit[1]
        return score

    sweeps = 0
    for sweeps, order in enumerate(visit_orders(len(units), seed), start=1):
        progress = False
        for i in order:
            unit = units[i]
            stamp = tuple(version[t] for s in unit for _, others in coupled[s.id]
                          for t, _ in others)
            if solved_at.get(unit[0].id) == stamp:
                continue  # S_p unchanged since its last assignment: the same optimum
            scores = [score_of(s) for s in unit]
            if similarity is not None:
                scores = [similarity(s, score) for s, score in zip(unit, scores, strict=True)]
            what = f"weight matching, channel space {unit[0].id}"
            new_perms = [p.to(device) for p in solve_grouped(scores, unit[0].groups, what)]
            old = new = 0.0
            for s, score, perm in zip(unit, scores, new_perms, strict=True):
                diag = torch.arange(s.size, device=device)
                old += float(score[diag, perms[s.id]].sum())
                new += float(score[diag, perm].sum())
            progress |= new - old > tol * max(1.0, abs(old))
            for s, perm in zip(unit, new_perms, strict=True):
                if not torch.equal(perm, perms[s.id]):
                    perms[s.id] = perm
                    version[s.id] += 1
            solved_at[unit[0].id] = stamp
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
