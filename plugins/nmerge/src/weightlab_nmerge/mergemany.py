"""MergeMany (Ainsworth, Hayase & Srinivasa, Git Re-Basin, ICLR 2023, Algorithm 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from weightlab.alignment import Alignment
from weightlab.matching.weight import is_bn_stat, weight_matching, weight_objective


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
            # a distinct space order per (round, model), as the authors' rngmix(rng, "it-k")
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
