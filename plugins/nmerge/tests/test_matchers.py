"""MergeMany and C2M3 on planted permutations, the cycle error, and the Frank–Wolfe pieces
(gradient, start, monotone ascent) on small digits-sized MLPs."""

from __future__ import annotations

import pytest
import torch
from weightlab import plugins, testing
from weightlab.alignment import Alignment, transform_axis
from weightlab.errors import UsageError
from weightlab.matching.weight import weight_matching
from weightlab.merging import merge
from weightlab_nmerge import frank_wolfe
from weightlab_nmerge.cycle import cycle_error, pairwise
from weightlab_nmerge.mergemany import merge_many


def _same_state(a, b):
    return all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in b)


@pytest.mark.parametrize("name,params", [("mergemany", {}), ("c2m3", {"init": "mergemany"})])
def test_planted_permutations_are_recovered_consistently(planted, name, params):
    """K = 4 copies of one MLP (3×32), each with random permutations of all hidden spaces:
    every alignment maps its copy onto copy 1 exactly, so the merge is copy 1 itself (the
    original function) and the cycle error is 0. Measured: MergeMany converges in 2 rounds
    (the second without progress); C2M3 started there stops at once with a zero Frank–Wolfe
    gap (the planted alignment is a maximiser)."""
    matcher = plugins.registry().create("matchers", name, params)
    graph, models = planted["graph"], planted["models"]
    res = merge(models, [0.25] * 4, matcher=matcher, graph=graph)
    first = models[0].state_dict()
    for m, al in zip(models, res.alignments, strict=True):
        assert _same_state(al.apply(graph, m.state_dict()), first)
        assert al.info["cycle_error"] == 0.0 and al.info["matcher"] == name
    assert _same_state(res.model.state_dict(), first)
    testing.assert_same_function(res.model, planted["net"])
    info = res.alignments[0].info
    if name == "mergemany":
        assert info["converged"] and info["rounds"] == 2
    else:
        assert info["stop"] == "gap" and info["iterations"] == 1


def test_mergemany_stops_at_max_iter_without_claiming_convergence(planted):
    """The same planted copies with max_iter=1: one round changes permutations (progress), so
    the result is reported as not converged after 1 round."""
    states = [m.state_dict() for m in planted["models"]]
    _, info = merge_many(planted["graph"], states, max_iter=1)
    assert info["rounds"] == 1 and not info["converged"] and info["changed_steps"] >= 3


def test_cycle_error_counts_inconsistent_channels():
    """Three models, one space of 4 channels: P_01 = id, P_12 swaps channels 0 and 1, P_02 =
    id — the composition P_01 P_12 differs from P_02 on 2 of 4 channels."""
    ident, swap = torch.arange(4), torch.tensor([1, 0, 2, 3])
    maps = {(0, 1): Alignment({7: ident}), (1, 2): Alignment({7: swap}),
            (0, 2): Alignment({7: ident})}
    assert cycle_error(maps, 3) == 0.5
    maps[(0, 2)] = Alignment({7: swap})
    assert cycle_error(maps, 3) == 0.0
    with pytest.raises(UsageError, match="at least 3 models"):
        cycle_error({}, 2)


def test_pairwise_weight_matching_is_not_cycle_consistent():
    """Four untrained MLPs (3×32, seeds 0–3): weight matching each pair on its own gives maps
    whose compositions disagree (measured: 83.3 % of channels over the 4 triples), while
    MergeMany and C2M3 are consistent (0 %)."""
    nets = [testing.tiny_model("mlp", depth=3, width=32, seed=s).eval() for s in range(4)]
    graph = testing.trace(nets[0])
    states = [n.state_dict() for n in nets]
    maps = {(i, j): weight_matching(graph, states[i], states[j])
            for i in range(4) for j in range(i + 1, 4)}
    assert cycle_error(maps, 4) > 0.5
    for name in ("mergemany", "c2m3"):
        als = plugins.registry().create("matchers", name).match_many(graph, nets)
        assert cycle_error(pairwise(als), 4) == 0.0 and als[0].info["cycle_error"] == 0.0


def test_frank_wolfe_gradient_matches_autograd():
    """∂f/∂P_k^s of f = Σ_{i<j} Σ_tensors ⟨U_i, U_j⟩ at three random doubly stochastic points
    (three untrained 2×8 MLPs), against autograd of f written out directly."""
    nets = [testing.tiny_model("mlp", depth=2, width=8, seed=s).eval() for s in range(3)]
    graph = testing.trace(nets[0])
    ts = frank_wolfe._Tensors(graph, [n.state_dict() for n in nets], False, torch.float64)
    gen = torch.Generator().manual_seed(1)
    mats = [{s.id: frank_wolfe.perturbed_barycenter(s.size, gen) for s in ts.spaces}
            for _ in nets]
    ts.reset(mats)
    leaves = [{sid: m.clone().requires_grad_(True) for sid, m in mm.items()} for mm in mats]
    us = []
    for w, leaf in zip(ts.w, leaves, strict=True):
        u = {}
        for key, fac in ts.factors.items():
            t = w[key]
            for sid, e in fac:
                t = transform_axis(t, e.axis, leaf[sid], e.repeat, e.offset)
            u[key] = t
        us.append(u)
    f = sum(sum((us[i][key] * us[j][key]).sum() for i in range(3) for j in range(i + 1, 3))
            for key in ts.factors)
    f.backward()
    total = {key: sum(ts.q[k][key][0] for k in range(3)) for key in ts.factors}
    for k in range(3):
        for sid, g in ts.gradient(k, total).items():
            torch.testing.assert_close(g, leaves[k][sid].grad, rtol=1e-10, atol=1e-12)


def test_perturbed_barycenter_is_doubly_stochastic_and_near_uniform():
    """The authors' start: 1/n + U[0, 0.01/n) noise, Sinkhorn-normalised — rows and columns
    sum to 1 within 1e-8 and every entry stays within 1 % of 1/n (n = 50)."""
    p = frank_wolfe.perturbed_barycenter(50, torch.Generator().manual_seed(0))
    assert torch.allclose(p.sum(0), torch.ones(50, dtype=p.dtype), atol=1e-8)
    assert torch.allclose(p.sum(1), torch.ones(50, dtype=p.dtype), atol=1e-8)
    assert float((p * 50 - 1).abs().max()) < 0.01 and p.std() > 0


def test_c2m3_from_the_barycenter_ascends_to_a_vertex_and_is_seeded():
    """Four untrained MLPs (3×32). Objective Σ_{i<j} Σ ⟨U_i, U_j⟩, measured: from the
    perturbed barycenter (seed 3) 0.11 at the start (every universe is nearly the channel
    mean), 49.04 after 24 iterations, stopping on a zero Frank–Wolfe gap at a vertex
    (relaxed = projected); from the identity 47.19; MergeMany's alignment 46.24 (a
    stationary point: C2M3 started there stops after one gap check). The same seed gives
    the same permutations; an unknown start is one clear error."""
    nets = [testing.tiny_model("mlp", depth=3, width=32, seed=s).eval() for s in range(4)]
    graph = testing.trace(nets[0])
    states = [n.state_dict() for n in nets]
    als, info = frank_wolfe.c2m3(graph, states, seed=3)
    again, _ = frank_wolfe.c2m3(graph, states, seed=3)
    mm, _ = merge_many(graph, states)
    _, from_mm = frank_wolfe.c2m3(graph, states, init="mergemany", start=mm)
    assert info["objective_start"] < 1.0 and info["stop"] == "gap"
    assert info["objective"] == pytest.approx(info["objective_relaxed"], rel=1e-6)
    assert info["objective"] > from_mm["objective"] + 1.0 > 40.0
    assert from_mm["iterations"] == 1 and from_mm["stop"] == "gap"
    assert all(torch.equal(a.perms[s], b.perms[s]) for a, b in zip(als, again) for s in a.perms)
    with pytest.raises(UsageError, match="init='sinkhorn'"):
        frank_wolfe.c2m3(graph, states, init="sinkhorn")
