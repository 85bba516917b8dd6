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
from weightlab.matching.assignment import solve_grouped
from weightlab.matching.features import collect_feature_stats

SIMILARITIES = {"inner": "inner", "correlation": "corr"}


def activation_matching(graph: FeatureGraph, model_a: nn.Module, model_b: nn.Module,
                        loader: Iterable, samples: int | None = None,
                        similarity: str = "inner") -> Alignment:
    if similarity not in SIMILARITIES:
        raise WeightlabError(f"similarity={similarity!r}: expected inner or correlation")
    stats = collect_feature_stats([model_a, model_b], graph, loader, samples)
    out = Alignment()
    for unit in graph.units():  # attention's tied head spaces are solved together
        for space in unit:
            if space.id not in stats:
                raise WeightlabError(f"activation matching: channel space {space.id} (produced "
                                     f"by {', '.join(space.producers) or 'no layer'}) has no "
                                     f"feature point to read")
        sims = [stats[s.id].block(0, 1, SIMILARITIES[similarity]) for s in unit]  # s(A_i, B_j)
        perms = solve_grouped(sims, unit[0].groups,
                              what=f"activation matching, channel space {unit[0].id}")
        for space, perm in zip(unit, perms, strict=True):
            out.perms[space.id] = perm
    count = next(iter(stats.values())).count if stats else 0
    out.info.update(matcher="activation", observations=count, similarity=similarity)
    return out
