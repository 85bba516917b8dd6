"""Joint (merge/unmerge) alignments of attention-head spaces, for ZipIt!, CCA and any matcher
that builds a merge per channel space from feature statistics.

An attention's query·key and value·output spaces are ``groups = H`` blocks of d channels that
must move head by head, with one head assignment τ for both (``Space.tie``). A joint merge of
such a unit keeps that structure:

1. τ and the within-head permutations come from the exact grouped assignment on the two
   models' feature correlations (:func:`weightlab.matching.assignment.solve_grouped`, what
   activation matching does);
2. a space that a layer reads linearly (value·output: the output projection's input columns
   are consumer-side entries) is merged head by head: merged head g is built by the
   matcher's own rule from A's head g and B's head τ(g) only — the 2d × 2d block of the
   statistics — so M_s (C × 2C) and U_s (2C × C) are block-structured and every merged head
   is still a head;
3. a space that no layer reads linearly (query·key: only the bilinear form q·kᵀ reads it,
   there is no unmerge side to undo a many-to-one merge) is aligned by the permutation of
   step 1, as the joint form M = [½I ½P], U = [I; Pᵀ].

Deviation from a plain per-space merge (which a head space refuses): merging Q·K features
jointly would change every attention score by an amount no later layer can correct.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from weightlab.graph.spaces import FeatureGraph, Space
from weightlab.matching.assignment import solve_grouped
from weightlab.matching.features import FeatureStats

PairRule = Callable[[FeatureStats, Space], tuple[torch.Tensor, torch.Tensor]]


def linear_read(graph: FeatureGraph, space: Space) -> bool:
    """Does some layer read ``space`` linearly (a consumer-side entry: a weight's input axis)?"""
    consumer = graph.input_entries()
    return any((e.key, e.axis) in consumer for e in space.entries)


def substats(stats: FeatureStats, index: torch.Tensor) -> FeatureStats:
    """The statistics of the columns ``index`` of the joint feature vector (models side by
    side: the result holds ``stats.models`` models of len(index) / models channels)."""
    index = index.to(stats.mean.device)
    return FeatureStats(stats.count, stats.mean[index], stats.m2[index][:, index], stats.models)


def unit_joint_merges(graph: FeatureGraph, unit: list[Space], stats: dict[int, FeatureStats],
                      rule: PairRule, what: str = "joint merge"
                      ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """(M, U) of every space of a head unit (two models), as the module docstring says.
    ``rule(stats_of_one_head_pair, space)`` returns the (d × 2d, 2d × d) merge of one head of
    A with its matched head of B."""
    cross = [stats[s.id].block(0, 1, "corr") for s in unit]
    return grouped_joint_merges(
        graph, unit, cross, lambda space, index: rule(substats(stats[space.id], index), space),
        what)


def grouped_joint_merges(graph: FeatureGraph, unit: list[Space], cross: list[torch.Tensor],
                         rule: Callable[[Space, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                         what: str = "joint merge"
                         ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """The same from any similarity: ``cross[k]`` (C × C) scores A's channel i against B's j in
    the unit's k-th space (the head assignment is solved on it), and ``rule(space, index)``
    merges the 2d units ``index`` of the joint 2C vector (A's head, then B's matched head)."""
    groups = unit[0].groups
    perms = solve_grouped(cross, groups, what=f"{what}, channel space {unit[0].id}")
    out = {}
    for space, perm in zip(unit, perms, strict=True):
        c = space.size
        d = c // groups
        if not linear_read(graph, space):
            eye = torch.eye(c)
            p = torch.zeros(c, c)
            p[torch.arange(c), perm] = 1.0
            out[space.id] = (torch.cat([eye, p], 1) * 0.5, torch.cat([eye, p.T], 0))
            continue
        tau = perm.reshape(groups, d)[:, 0] // d  # B's head placed at head g
        merge = torch.zeros(c, 2 * c)
        unmerge = torch.zeros(2 * c, c)
        for g in range(groups):
            a = torch.arange(g * d, (g + 1) * d)
            b = torch.arange(int(tau[g]) * d, (int(tau[g]) + 1) * d) + c
            m_g, u_g = rule(space, torch.cat([a, b]))
            rows = slice(g * d, (g + 1) * d)
            merge[rows, a] = m_g[:, :d].to(merge)
            merge[rows, b] = m_g[:, d:].to(merge)
            unmerge[a, rows] = u_g[:d].to(unmerge)
            unmerge[b, rows] = u_g[d:].to(unmerge)
        out[space.id] = (merge, unmerge)
    return out
