"""The ``sinkhorn`` matcher: doubly stochastic plans, a planted permutation recovered, the
weight objective against weight matching, B's function kept, and one-line errors."""

from __future__ import annotations

import pytest
import torch
from weightlab import plugins, testing
from weightlab.alignment import permute_model, random_permutation
from weightlab.errors import ParamError, UsageError
from weightlab.matching.weight import weight_matching, weight_objective
from weightlab_sinkhorn.rebasin import sinkhorn


def sk(**params):
    return plugins.registry().create("matchers", "sinkhorn", params)


def small_mlp(seed: int):
    return testing.tiny_model("mlp", (1, 8, 8), seed=seed, depth=2, width=64)


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_sinkhorn_plan_is_doubly_stochastic(tau):
    """Random N(0, 1) logits 64×64, 20 iterations: rows and columns sum to 1 within 1e-5
    (measured 2.4e-7 at τ = 1; at τ = 0.1 20 iterations leave rows off by 0.057, so the
    lower temperature here is 0.3 with 200 iterations), entries non-negative."""
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    p = sinkhorn(x, tau, 20 if tau == 1.0 else 200)
    ones = torch.ones(64)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(0), ones, atol=1e-5) and torch.allclose(p.sum(1), ones, atol=1e-5)
    assert float(p.max()) < 1  # a soft plan, not a permutation


def test_planted_permutation_is_recovered_exactly():
    """B = A (2×64 MLP) with every free space randomly permuted: sinkhorn(objective=weight,
    init=zero) maps B back onto A bit for bit, and B aligned computes what B does."""
    a = small_mlp(0)
    graph = testing.trace(a)
    b = permute_model(a, graph, random_permutation(graph, torch.Generator().manual_seed(3)))
    al = sk().match(graph, a, b)
    back = al.apply(graph, b.state_dict())
    assert all(torch.equal(back[k], v) for k, v in a.state_dict().items())
    assert al.info["loss_last"] < al.info["loss_first"]
    testing.assert_same_function(b, permute_model(b, graph, al))


def test_planted_permutation_in_a_resnet():
    """The same on a ResNet-8 with randomized BatchNorm (residual spaces, conv entries)."""
    a = testing.randomize_norms(testing.tiny_model("cifar_resnet8", (1, 8, 8), seed=0), 0).eval()
    graph = testing.trace(a)
    b = permute_model(a, graph, random_permutation(graph, torch.Generator().manual_seed(3)))
    back = sk(steps=100).match(graph, a, b).apply(graph, b.state_dict())
    assert all(torch.equal(back[k], v) for k, v in a.state_dict().items())


@pytest.mark.parametrize("seeds", [(0, 1), (2, 3)])
def test_weight_objective_against_weight_matching(seeds):
    """Random-init 2×64 MLP pairs, default 200 Adam steps, lr 0.1, 20 iterations. Measured
    Σ⟨W_A, P(W_B)⟩ (seeds 0/1; 2/3): identity 0.594; −0.211, weight matching 11.507; 11.734;
    sinkhorn τ = 1 init=zero 11.481; 11.792 (above weight matching), init=weight 11.507;
    11.594; τ = 0.1 init=zero 10.972; 11.057, init=weight 11.076; 11.141. So at τ = 1 it is
    within 1.2 % of weight matching (sometimes above); at τ = 0.1 (20 iterations do not
    converge there) 4–6 % below. Asserted: τ = 1 ≥ 97 % of weight matching, τ = 0.1 ≥ 90 %.
    On the 3×512 MLP (seeds 0/1, 2/3, 4/5; weight matching 100.55 / 100.68 / 100.13) init=zero
    reached 92.5 / 92.8 / 93.0 at τ = 1 and init=weight kept weight matching's value exactly
    (not asserted here: 50 s a run on this CPU)."""
    a, b = (small_mlp(s) for s in seeds)
    graph = testing.trace(a)
    sa, sb = a.state_dict(), b.state_dict()
    wm = weight_matching(graph, sa, sb).info["objective"]
    assert weight_objective(graph, sa, sb) < 0.1 * wm
    for params, share in (({}, 0.97), ({"init": "weight"}, 0.97), ({"tau": 0.1}, 0.9)):
        got = sk(**params).match(graph, a, b).info["objective"]
        assert got >= share * wm, (params, got, wm)


def test_midpoint_objective_lowers_the_midpoint_loss(digits_calibration):
    """Two random-init 2×64 MLPs on digits calibration data: objective=midpoint ends with a
    lower soft midpoint loss than it starts with, and the result is a permutation."""
    a, b = small_mlp(0), small_mlp(1)
    graph = testing.trace(a)
    al = sk(objective="midpoint", steps=30).match(graph, a, b, digits_calibration)
    assert al.is_permutation and al.info["loss_last"] < al.info["loss_first"]


def test_errors_are_one_line():
    a, b = small_mlp(0), small_mlp(1)
    graph = testing.trace(a)
    with pytest.raises(UsageError, match="objective=midpoint needs calibration data"):
        sk(objective="midpoint").match(graph, a, b)
    with pytest.raises(ParamError, match="objective") as e:
        sk(objective="distance")
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(ParamError, match="tau"):
        sk(tau=0.0)
