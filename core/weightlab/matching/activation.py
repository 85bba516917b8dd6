"""Activation matching (Git Re-Basin §3.1; Li et al. 2016; Tatro et al. 2020): per free space,
the permutation of B's channels maximising Σ_i s(A_i, B_perm[i]) of their post-activation
features over calibration data (one pass for all spaces, one assignment per space).

``similarity``: ``inner`` — E[A_i B_j], the paper's objective Σ_i ⟨Z_A[:, i], Z_B[:, π(i)]⟩
(its code sums the uncentered products) — or ``correlation`` — Pearson correlation, as Li et
al., Tatro et al. and weightlab's earlier default do; it ignores channel scale and offset."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from weightlab.alignment import Alignment
from weightlab.errors import WeightlabError
from weightlab.graph.spaces import FeatureGraph
from weightlab.matching.assignment import solve_assignment
from weightlab.matching.features import collect_feature_stats

SIMILARITIES = {"inner": "inner", "correlation": "corr"}


def activation_matching(graph: FeatureGraph, model_a: nn.Module, model_b: nn.Module,
                        loader: Iterable, samples: int | None = None,
                        similarity: str = "inner") -> Alignment:
    if similarity not in SIMILARITIES:
        raise WeightlabError(f"similarity={similarity!r}: expected inner or correlation")
    stats = collect_feature_stats([model_a, model_b], graph, loader, samples)
    out = Alignment()
    for space in graph.free_spaces():
        if space.id not in stats:
            raise WeightlabError(f"activation matching: channel space {space.id} (produced by "
                                 f"{', '.join(space.producers) or 'no layer'}) has no feature "
                                 f"point to read")
        sim = stats[space.id].block(0, 1, SIMILARITIES[similarity])  # s(A_i, B_j)
        out.perms[space.id] = solve_assignment(sim, what=f"activation matching, channel space "
                                                         f"{space.id}")
    count = next(iter(stats.values())).count if stats else 0
    out.info.update(matcher="activation", observations=count, similarity=similarity)
    return out
