"""Joint merges of two models, the form ZipIt! and CCA produce and PFM consumes.

Per free channel space s: a merge matrix M_s = [M_A M_B] (C × 2C) taking both models'
features to the merged ones, f = M_A f_A + M_B f_B, and an unmerge matrix U_s = [U_A; U_B]
(2C × C) taking them back, f_k ≈ U_k f (weightlab.alignment.Alignment.merges). Model k
*expressed in the merged space* transforms every tensor of every free space: producer-side
axes (weight rows, biases, norm tensors) by D(w)·M_k, consumer-side axes (a layer's input) by
U_k, and the merge at weights w is their weighted sum:

    θ̃_k(w) = D(w) M_k θ_k U_k,   merged θ(w) = Σ_k w_k θ̃_k(w),   D(w) = diag(1 / Σ_k w_k s_k)

where s_k = M_k·1 is model k's share of each merged feature. When every row of M is a mean
of its members (ZipIt!'s (U / column sums)ᵀ, a permutation's [½I ½P]) this makes merged
feature c the w-weighted mean of its members, Σ_f w_k(f) U[f, c] f_f / Σ_f w_k(f) U[f, c]: at
w = (½, ½) D = 2 (θ̃_k = 2·M_k θ_k U_k, the usual joint merge); at w = (1, 0) a feature of A
alone or zipped across the models is A's own feature, so the merge is model A exactly unless A
had two of its own features zipped together (then they are averaged: the information is not
in the merged space). The former fixed D = 2 doubled such within-model features at w ≠ ½
(relative logit error 0.60 at w = (1, 0), b = 0.5). For signed merges (CCA) D stays 2.
A permutation P of B onto A is the joint merge M = [½I ½P], U = [I; Pᵀ]; then θ̃_A = θ_A and
θ̃_B is B aligned to A (the same function). θ̃_k at (½, ½) is what REPAIR-style normalizers
take as reference k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from weightlab.alignment import Alignment, transform_axis
from weightlab.errors import UsageError
from weightlab.graph.spaces import FeatureGraph
from weightlab.interpolation import average_states, with_state

MODELS = 2


class JointAlignment(Alignment):
    """An Alignment whose merges are joint (C × 2C). ``express`` gives both models in the
    merged space; weightlab.merging and weightlab.interpolation average those instead of
    model A and B-aligned-to-A (so ``weightlab merge`` and ``interpolate`` take ZipIt!/CCA)."""

    joint = True

    def express(self, graph: FeatureGraph, models: Sequence[nn.Module],
                weights: Sequence[float] = (0.5, 0.5)) -> list[dict[str, torch.Tensor]]:
        return states_in_merged_space(models, graph, self, weights)


def is_joint(alignment: Alignment | None, graph: FeatureGraph) -> bool:
    """Does ``alignment`` merge both models jointly (C × 2C merges) rather than map B to A?"""
    if alignment is None or not alignment.merges:
        return False
    sid, (m, _) = next(iter(alignment.merges.items()))
    return m.shape[1] == MODELS * graph[sid].size


def joint_form(alignment: Alignment | None, graph: FeatureGraph) -> JointAlignment:
    """Every free space as a joint merge. A map of B onto A (a permutation, or general
    (M, U) with M: C × C) becomes M = [½I ½M], U = [I; U]; no alignment is the identity."""
    if alignment is None:
        alignment = Alignment.identity(graph)
    if is_joint(alignment, graph):
        return JointAlignment(alignment.perms, alignment.merges, alignment.info)
    out = JointAlignment(info=dict(alignment.info))
    for s in graph.free_spaces():
        m, u = alignment.matrices(s.id, s.size)
        eye = torch.eye(s.size, dtype=m.dtype, device=m.device)
        out.merges[s.id] = (torch.cat([eye, m], 1) * 0.5, torch.cat([eye, u.to(m)], 0))
    return out


def model_parts(joint: Alignment, graph: FeatureGraph,
                weights: Sequence[float] = (0.5, 0.5)) -> list[Alignment]:
    """Per model k the alignment (D(w)·M_k, U_k) that expresses it in the merged space."""
    parts = joint.split(graph, MODELS)
    for sid in parts[0].merges:
        ms = [part.merges[sid][0] for part in parts]
        shares = [m.sum(1) for m in ms]  # s_k: model k's share of each merged feature
        total = sum(shares)
        means = all((m >= 0).all() for m in ms) and torch.allclose(
            total, torch.ones_like(total), atol=1e-5)
        if means:  # D(w) = 1 / Σ_k w_k s_k (0 where no weighted member: nothing to carry)
            d = sum(w * sh for w, sh in zip(weights, shares))
            scale = torch.where(d > 0, 1.0 / d.clamp_min(1e-30), torch.zeros_like(d))
        else:  # signed merges (CCA): the fixed D = 2
            scale = torch.full_like(total, float(MODELS))
        for part, m in zip(parts, ms):
            part.merges[sid] = (scale[:, None] * m, part.merges[sid][1])
    return parts


def states_in_merged_space(models: Sequence[nn.Module], graph: FeatureGraph, joint: Alignment,
                           weights: Sequence[float] = (0.5, 0.5)
                           ) -> list[dict[str, torch.Tensor]]:
    """θ̃_k(w) for each model.

    BatchNorm running variances are the one entry a linear map does not carry: a merged
    channel Σ_j t_j z_j of (assumed independent) channels has variance Σ_j t_j² v_j, so they
    are mapped by the element-wise square of D(w)·M_k. For the 0/1 rows of a permutation or a
    zipped pair this equals mapping them linearly (ZipIt!'s code); for CCA's signed maps it
    keeps them positive (a linear map can make them negative, and the model NaN)."""
    _check_two(models)
    out = []
    for part, m in zip(model_parts(joint, graph, weights), models):
        state = m.state_dict()
        new = part.apply(graph, state)
        variances: dict[str, torch.Tensor] = {}  # a BatchNorm after a concatenation holds
        for sid, (merge, _) in part.merges.items():  # several spaces at their offsets
            for e in graph[sid].entries:
                if e.key.endswith("running_var"):
                    v = variances.get(e.key, state[e.key])
                    variances[e.key] = transform_axis(v, e.axis, merge.square(), e.repeat,
                                                      e.offset)
        new.update(variances)
        out.append(new)
    return out


def merged_state(models: Sequence[nn.Module], graph: FeatureGraph, joint: Alignment,
                 weights: Sequence[float] = (0.5, 0.5)) -> dict[str, torch.Tensor]:
    """Σ_k w_k θ̃_k(w) (integer buffers from model A)."""
    return average_states(states_in_merged_space(models, graph, joint, weights), weights)


def merged_model(models: Sequence[nn.Module], graph: FeatureGraph, joint: Alignment,
                 weights: Sequence[float] = (0.5, 0.5)) -> nn.Module:
    """The fully merged model: model A's architecture with Σ_k w_k θ̃_k."""
    return with_state(models[0], merged_state(models, graph, joint, weights))


def references(models: Sequence[nn.Module], graph: FeatureGraph, joint: Alignment
               ) -> list[nn.Module]:
    """The models expressed in the merged space (the references of REPAIR-style
    normalizers after a joint merge)."""
    return [with_state(m, s) for m, s in
            zip(models, states_in_merged_space(models, graph, joint))]


def _check_two(models: Sequence[nn.Module]) -> None:
    if len(models) != MODELS:
        raise UsageError(f"a joint merge combines exactly two models, got {len(models)}")
