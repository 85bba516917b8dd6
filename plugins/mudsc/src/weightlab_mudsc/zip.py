"""MuDSC, zip form (the authors' ``_act_iws_fs`` setting): both models' 2C units of a space
zipped down to C (ZipIt!'s greedy matching, the zipit plugin's ``zip_match``) on the joint
dual-space similarity

    S_p = α · corr([X_A; X_B]) + (1 − α) · corr([F_A, F_B])      (2C × 2C)

F_k: model k's features on calibration data; X_k: its weight vectors for space p (every
entry of p, rows concatenated) with every other axis expressed in the merged space of its
space — model k as the joint merge expresses it (θ̃_k of weightlab_zipit.joint at ½, ½:
producer axes D·M_k, consumer axes U_k). The merges start from zipping S_act alone and are
updated space by space in a seeded random order (coordinate descent, as the authors'
``iter_transform``). The similarities of different spaces share tensors but are normalized
apart, so the descent need not settle (on two MNIST MLPs it still changed merges after 100
sweeps); as the authors, it stops after ``patience`` sweeps (their ``tol`` = 5) without a
better sweep value and keeps the best merges. The sweep value: the mean over spaces of the
mean S_p between the members of each zipped unit (the authors average the greedy step's
picked similarity, discounted by a after a unit's first zip). The result is a joint merge
(C × 2C, 2C × C per space) that ``weightlab merge`` averages in the merged space.
"""

from __future__ import annotations

import torch
from weightlab.alignment import transform_axis
from weightlab.errors import UsageError
from weightlab.graph.spaces import FeatureGraph, Space
from weightlab.matching.features import FeatureStats
from weightlab.matching.heads import grouped_joint_merges
from weightlab.matching.weight import is_bn_stat, rows, visit_orders


def joint_weight_vectors(graph: FeatureGraph, space: Space, states: list[dict], parts: list
                         ) -> torch.Tensor:
    """[X_A; X_B] (2C × L): each model's weight vectors of ``space``, other axes expressed in
    the merged spaces (``parts``: per model the alignment into the merged space)."""
    consumer = graph.input_entries()
    by_key = graph.param_axes()
    out = []
    for state, part in zip(states, parts, strict=True):
        cols = []
        for e in space.entries:
            if e.per_group or is_bn_stat(e.key):
                continue
            w = state[e.key]
            for t, o in by_key[e.key]:
                if o.axis != e.axis and t in part.merges:
                    m, u = part.merges[t]
                    w = transform_axis(w, o.axis, u.T if (e.key, o.axis) in consumer else m,
                                       o.repeat, o.offset)
            cols.append(rows(w, e.axis, e.repeat, e.offset, space.size))
        out.append(torch.cat(cols, 1))
    return torch.cat(out)


def zipped_similarity(sim: torch.Tensor, unmerge: torch.Tensor) -> float:
    """Mean of sim[i, j] over the pairs i ≠ j zipped into one unit (0 when none is)."""
    together = unmerge.to(sim) @ unmerge.to(sim).T  # 1 where i and j share a unit
    together.fill_diagonal_(0)
    pairs = float(together.sum())
    return float((sim * together).sum()) / pairs if pairs else 0.0


def similarity_of(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Correlation (the authors' ``_correlation``), cosine (``_cossim``) or the inner product of
    the rows of ``x``."""
    if kind == "correlation":
        x = x - x.mean(1, keepdim=True)
    if kind != "inner":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return x @ x.T


def mudsc_zip(graph: FeatureGraph, states: list[dict[str, torch.Tensor]],
              stats: dict[int, FeatureStats], *, alpha: float = 0.5,
              weight_similarity: str = "correlation", activation_similarity: str = "correlation",
              a: float = 0.5, b: float = 1.0, max_iter: int = 100, seed: int = 0,
              patience: int = 5):
    """The joint merge of the two models (see the module docstring)."""
    from weightlab_zipit.joint import JointAlignment, model_parts
    from weightlab_zipit.zipit import constant_features_alike, zip_match

    states = [{k: v.detach().to("cpu", torch.float64) for k, v in s.items()} for s in states]
    act = {}
    for sid, st in stats.items():
        m = st.corr() if activation_similarity == "correlation" else st.inner()
        act[sid] = constant_features_alike(m, st.cov.diagonal()).double()
    units = graph.units()
    heads = [s.id for u in units if u[0].groups > 1 for s in u if s.id not in act]
    if heads:
        raise UsageError(f"matcher mudsc: mode=zip needs the features of attention head spaces "
                         f"(space {heads[0]} has no feature point to read); use mode=permute")

    def unit_merges(unit, sims):
        """Zip each space of ``unit`` on its joint similarity; a head unit head by head
        (weightlab.matching.heads: heads matched as blocks, value·output zipped within the
        matched heads, query·key permuted)."""
        if unit[0].groups <= 1:
            return {s.id: zip_match(sims[s.id], a, b) for s in unit}
        cross = [sims[s.id][:s.size, s.size:] for s in unit]
        return grouped_joint_merges(
            graph, unit, cross,
            lambda space, idx: zip_match(sims[space.id][idx][:, idx], a, b), "matcher mudsc")

    out = JointAlignment()
    for unit in units:
        if all(s.id in act for s in unit):
            out.merges.update(unit_merges(unit, act))
        else:  # a space without features (weight-only): the identity until its first visit
            for s in unit:
                eye = torch.eye(s.size, dtype=torch.float64)
                out.merges[s.id] = (torch.cat([eye, eye], 1) * 0.5, torch.cat([eye, eye]))
    best, best_merges, stale, sweeps = -float("inf"), dict(out.merges), 0, 0
    value = dict.fromkeys(out.merges, 0.0)
    for sweeps, order in enumerate(visit_orders(len(units), seed), start=1):
        changed = False
        for i in order:
            unit = units[i]
            parts = model_parts(out, graph)
            sims = {}
            for s in unit:
                x = joint_weight_vectors(graph, s, states, parts)
                sim = similarity_of(x, weight_similarity)
                sims[s.id] = alpha * sim + (1 - alpha) * act[s.id] if s.id in act else sim
            for sid, (merge, unmerge) in unit_merges(unit, sims).items():
                value[sid] = zipped_similarity(sims[sid], unmerge)
                if not torch.equal(unmerge, out.merges[sid][1].to(unmerge)):
                    changed = True
                    out.merges[sid] = (merge, unmerge)
        total = sum(value.values()) / max(len(value), 1)
        if total > best:
            best, best_merges, stale = total, dict(out.merges), 0
        else:
            stale += 1
        if not changed or stale >= patience or sweeps >= max_iter:
            break
    out.merges = best_merges
    spaces = graph.free_spaces()
    out.info.update(matcher="mudsc", joint=True, models=2, sweeps=sweeps,
                    converged=not changed, value=best, alpha=alpha,
                    weight_only_spaces=sorted(s.id for s in spaces if s.id not in act))
    return out
