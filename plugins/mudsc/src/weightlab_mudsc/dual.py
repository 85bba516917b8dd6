"""MuDSC, merging under dual-space constraints (Xu, Yuan, Wang, Wang, Song & Song, "Training-free
Pretrained Model Merging", CVPR 2024), permutation form.

Per free channel space p, with i indexing A's channels and j B's:

    S_p = α · S_weight + (1 − α) · S_act

- S_act[i, j]: the Pearson correlation of A's feature i and B's feature j on calibration data
  (the authors' ``CovarianceMetric``), fixed for the whole run.
- S_weight[i, j]: the Pearson correlation of the two channels' weight vectors, a channel's
  vector being every entry of the space concatenated (producer rows, consumer columns, norm
  parameters; BatchNorm running statistics left out, as ``ignore_running_val`` does) with B's
  other axes mapped by the other spaces' current permutations (the authors' ``_correlation``
  of ``get_weight_vectors``). It is Git Re-Basin's S_p = A_p B̃_pᵀ rescaled per row and
  column: with L entries per vector, row sums s and sums of squares q,

      μ = s / L,   σ² = q / L − μ²,   corr[i, j] = (S_p[i, j] / L − μ_A,i μ_B,j) / (σ_A,i σ_B,j)

  and permuting B's other axes only reorders a row, so μ and σ are fixed once.

The permutations come from Git Re-Basin's coordinate descent (core's ``weight_matching``, its
``similarity`` hook assigning S_p above), started from the activation-only assignment as the
authors do (``act_transform`` before ``iter_transform``). Attention heads: core's
``solve_grouped`` — per pair of heads the best within-head assignment, then the best head
assignment on their summed values (the authors' ``group_permute_weight``; here the query·key
and value·output spaces share one head permutation, as the model requires).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from weightlab.alignment import Alignment
from weightlab.graph.spaces import FeatureGraph, Space
from weightlab.matching.assignment import solve_grouped
from weightlab.matching.features import collect_feature_stats
from weightlab.matching.weight import is_bn_stat, rows, weight_matching

WEIGHT_SIMILARITIES = ("correlation", "cosine", "inner")
ACTIVATION_SIMILARITIES = {"correlation": "corr", "inner": "inner"}


def row_moments(graph: FeatureGraph, state: dict[str, torch.Tensor],
                dtype: torch.dtype = torch.float64, include_bn_stats: bool = False
                ) -> dict[int, tuple[torch.Tensor, torch.Tensor, int]]:
    """Per free space: (Σ_l w_il, Σ_l w_il², L) of each channel's concatenated weight vector,
    over the entries weight matching counts (per-head entries and, by default, BatchNorm
    running statistics left out)."""
    out = {}
    for s in graph.free_spaces():
        total = torch.zeros(s.size, dtype=dtype)
        square = torch.zeros(s.size, dtype=dtype)
        length = 0
        for e in s.entries:
            if e.per_group or (is_bn_stat(e.key) and not include_bn_stats):
                continue
            r = rows(state[e.key].detach().to("cpu", dtype), e.axis, e.repeat, e.offset, s.size)
            total += r.sum(1)
            square += r.square().sum(1)
            length += r.shape[1]
        out[s.id] = (total, square, length)
    return out


def normalized(score: torch.Tensor, a: tuple, b: tuple, kind: str) -> torch.Tensor:
    """S_p = Σ_l a_il b̃_jl turned into the correlation or cosine of the weight vectors
    (``inner``: S_p itself, Git Re-Basin's similarity). Floors as the authors': σ_A σ_B ≥ 1e-7,
    ‖a‖‖b‖ ≥ 1e-8 (a channel with constant weights correlates 0 with every other)."""
    if kind == "inner":
        return score
    (sa, qa, n), (sb, qb, _) = ((t.to(score) if torch.is_tensor(t) else t for t in m)
                                for m in (a, b))
    if kind == "cosine":
        return score / (qa.sqrt()[:, None] * qb.sqrt()[None, :]).clamp_min(1e-8)
    mean_a, mean_b = sa / n, sb / n
    std_a = (qa / n - mean_a.square()).clamp_min(0).sqrt()
    std_b = (qb / n - mean_b.square()).clamp_min(0).sqrt()
    cov = score / n - mean_a[:, None] * mean_b[None, :]
    return cov / (std_a[:, None] * std_b[None, :]).clamp_min(1e-7)


def activation_similarities(model_a: nn.Module, model_b: nn.Module, graph: FeatureGraph,
                            loader: Iterable, samples: int | None, kind: str
                            ) -> tuple[dict[int, torch.Tensor], int]:
    """S_act (A's channels × B's) of every free space with a feature point, from one pass;
    and the number of observations."""
    stats = collect_feature_stats([model_a, model_b], graph, loader, samples)
    sims = {sid: st.block(0, 1, ACTIVATION_SIMILARITIES[kind]) for sid, st in stats.items()}
    count = next(iter(stats.values())).count if stats else 0
    return sims, count


def activation_start(graph: FeatureGraph, act: dict[int, torch.Tensor]
                     ) -> dict[int, torch.Tensor]:
    """The activation-only permutations (α = 0), the descent's starting point; spaces without
    features start at the identity."""
    out = {}
    for unit in graph.units():
        if all(s.id in act for s in unit):
            perms = solve_grouped([act[s.id] for s in unit], unit[0].groups,
                                  what=f"mudsc start, channel space {unit[0].id}")
            out.update({s.id: p for s, p in zip(unit, perms, strict=True)})
    return out


def mudsc_matching(graph: FeatureGraph, state_a: dict[str, torch.Tensor],
                   state_b: dict[str, torch.Tensor], act: dict[int, torch.Tensor] | None, *,
                   alpha: float = 0.5, weight_similarity: str = "correlation",
                   init: str = "activation", max_iter: int = 100, seed: int = 0,
                   tol: float = 1e-12, dtype: torch.dtype = torch.float64) -> Alignment:
    """The alignment of B to A maximizing α·S_weight + (1 − α)·S_act per space by coordinate
    descent (see the module docstring). ``act``: S_act by space id (None or a missing space:
    that space is matched on its weights alone, recorded in ``info["weight_only_spaces"]``)."""
    act = act or {}
    moments_a = row_moments(graph, state_a, dtype)
    moments_b = row_moments(graph, state_b, dtype)
    weight_only = sorted(s.id for s in graph.free_spaces() if s.id not in act)

    def similarity(space: Space, score: torch.Tensor) -> torch.Tensor:
        w = normalized(score, moments_a[space.id], moments_b[space.id], weight_similarity)
        if space.id not in act:
            return w
        return alpha * w + (1 - alpha) * act[space.id].to(w)

    start = activation_start(graph, act) if init == "activation" else None
    out = weight_matching(graph, state_a, state_b, max_iter=max_iter, seed=seed, tol=tol,
                          dtype=dtype, init=start, similarity=similarity)
    out.info.update(matcher="mudsc", alpha=alpha, converged=out.info["sweeps"] < max_iter,
                    weight_only_spaces=weight_only)
    return out
