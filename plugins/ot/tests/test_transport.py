"""The transport problem alone: exact OT on a planted permutation, against the Hungarian
solution, and Sinkhorn's approach to the exact plan as ε shrinks."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from weightlab.errors import WeightlabError
from weightlab_ot.fusion import plan_to_map, squared_distances, transport_plan


def test_exact_ot_recovers_a_planted_permutation():
    """B = A's 64 channels (20-dim supports) in a random order: exact OT finds that order with
    zero cost, and the plan is returned as a permutation (perm[i] = B's channel for A's i)."""
    g = torch.Generator().manual_seed(0)
    xa = torch.randn(64, 20, generator=g, dtype=torch.float64)
    order = torch.randperm(64, generator=g)
    xb = xa[order]  # B's channel j is A's channel order[j]
    plan = transport_plan(squared_distances(xa, xb))
    perm = plan_to_map(plan)
    assert perm.dim() == 1
    assert torch.equal(xb[perm], xa)
    assert torch.equal(order[perm], torch.arange(64))
    assert float((plan * squared_distances(xa, xb)).sum()) < 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_exact_ot_equals_the_hungarian_solution(seed):
    """On random 50×50 similarities (continuous: the optimum is unique) the EMD plan with
    uniform marginals is the permutation linear_sum_assignment finds on −similarity."""
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(50, 50, generator=g, dtype=torch.float64)
    perm = plan_to_map(transport_plan(sim.max() - sim))  # any shift: marginals are fixed
    rows, cols = linear_sum_assignment(-sim.numpy())
    assert perm.dim() == 1 and perm.tolist() == cols[rows.argsort()].tolist()


def test_sinkhorn_approaches_the_exact_plan():
    """Random 40×40 costs in [0, 1). Measured ½Σ|n·T_ε − P|/n (P the exact permutation):
    ε = 0.1: 0.795, 0.03: 0.531, 0.01: 0.274; transport cost 0.1136, 0.0484, 0.0353 against
    the exact 0.0324. Both fall strictly with ε; at 0.01 the plan is within 0.3 of P (half
    the mass of a fully wrong plan would be 1.0), the cost within 10 % of the optimum; each
    row of n·T sums to 1 within 1e-3."""
    n = 40
    cost = torch.rand(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = transport_plan(cost)
    best = float((exact * cost).sum())
    dist, costs = [], []
    for reg in (0.1, 0.03, 0.01):
        plan = transport_plan(cost, reg, max_iter=20000)
        assert torch.allclose(plan.sum(1) * n, torch.ones(n, dtype=plan.dtype), atol=1e-3)
        assert plan_to_map(plan).dim() == 2  # dense: a soft map, never a permutation
        dist.append(0.5 * float((n * (plan - exact)).abs().sum()) / n)
        costs.append(float((plan * cost).sum()))
    assert dist[0] > dist[1] > dist[2] and dist[2] < 0.3
    assert costs[0] > costs[1] > costs[2] > best and costs[2] < 1.1 * best


def test_sinkhorn_that_does_not_converge_is_one_clear_error():
    cost = torch.rand(30, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.raises(WeightlabError, match=r"Sinkhorn with reg=0.01 did not converge in "
                                             r"max_iter=2 iterations .*larger max_iter or reg"):
        transport_plan(cost, 0.01, max_iter=2, what="space 3")
    with pytest.raises(WeightlabError, match="space 3: the cost matrix has 1 non-finite"):
        transport_plan(cost.index_put((torch.tensor([0]), torch.tensor([0])),
                                      torch.tensor(float("nan"), dtype=cost.dtype)),
                       what="space 3")
