"""Each method on hand-made task vectors against its paper's formula, written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from weightlab import plugins
from weightlab.errors import UsageError
from weightlab.interpolation import average_states
from weightlab.merging import merge_from_base
from weightlab_taskvec.taskvec import model_stock_ratio, slerp, trim


def method(name, **params):
    return plugins.registry().create("merge_methods", name, params)


def states_from(base, taus):
    return [{k: base[k] + t[k] for k in base} for t in taus]


def test_ties_trims_elects_and_takes_the_disjoint_mean():
    """density 0.5 keeps 3 of 6 entries per model:
    τ̂1 = [.5, 0, .3, −.8, 0, 0], τ̂2 = [−.4, .6, 0, 0, .7, 0], τ̂3 = [.3, −.9, 0, .4, 0, 0];
    Σ = [.4, −.3, .3, −.4, .7, 0] → γ = [+, −, +, −, +, 0]; disjoint mean over the agreeing
    entries: [(.5+.3)/2, −.9, .3, −.8, .7, 0]; θ = 1 + τ_m (λ = 1)."""
    base = {"w": torch.ones(6, dtype=torch.float64)}
    taus = [{"w": torch.tensor([0.5, -0.1, 0.3, -0.8, 0.0, 0.2], dtype=torch.float64)},
            {"w": torch.tensor([-0.4, 0.6, 0.1, -0.2, 0.7, -0.05], dtype=torch.float64)},
            {"w": torch.tensor([0.3, -0.9, -0.05, 0.4, 0.1, 0.25], dtype=torch.float64)}]
    out = method("ties", density=0.5).combine(base, states_from(base, taus), [1 / 3] * 3)
    expected = torch.tensor([1.4, 0.1, 1.3, 0.2, 1.7, 1.0], dtype=torch.float64)
    torch.testing.assert_close(out["w"], expected, rtol=0, atol=1e-12)
    # λ scales the merged task vector; density 1 skips the trim (entry 1: −.1, .6 and −.9
    # elect − by Σ = −.4, disjoint mean of −.1 and −.9 = −.5)
    half = method("ties", density=0.5, scaling=0.5).combine(base, states_from(base, taus),
                                                            [1 / 3] * 3)
    torch.testing.assert_close(half["w"], 1 + 0.5 * (expected - 1), rtol=0, atol=1e-12)
    full = method("ties", density=1.0).combine(base, states_from(base, taus), [1 / 3] * 3)
    assert float(full["w"][1]) == pytest.approx(1 - 0.5)


def test_ties_trim_scope_model_or_tensor():
    """Top half of the whole task vector [4, −3, .2, .1] is {4, −3} (the paper's code); per
    tensor it is the larger entry of each."""
    tau = {"a": torch.tensor([4.0, -3.0]), "b": torch.tensor([0.2, 0.1])}
    whole = trim(tau, 0.5, "model")
    assert whole["a"].tolist() == [4.0, -3.0] and whole["b"].tolist() == [0.0, 0.0]
    per = trim(tau, 0.5, "tensor")
    assert per["a"].tolist() == [4.0, 0.0] and per["b"].tolist() == [pytest.approx(0.2), 0.0]


def _random_problem(k=2, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(n, generator=g, dtype=torch.float64),
            "b": torch.randn(4, generator=g, dtype=torch.float64)}
    taus = [{key: torch.randn(v.shape, generator=g, dtype=torch.float64) for key, v in
             base.items()} for _ in range(k)]
    return base, taus


def test_task_arithmetic_with_one_over_k_is_the_uniform_average():
    base, taus = _random_problem(k=3)
    states = states_from(base, taus)
    out = method("task_arithmetic", scaling=1 / 3).combine(base, states, [1 / 3] * 3)
    avg = average_states(states)
    for key in base:
        torch.testing.assert_close(out[key], avg[key], rtol=0, atol=1e-12)
    summed = method("task_arithmetic").combine(base, states, [1 / 3] * 3)  # λ = 1: θ_b + Σ τ
    torch.testing.assert_close(summed["w"], base["w"] + sum(t["w"] for t in taus))


def test_dare_without_drops_is_task_arithmetic_and_unbiased_over_seeds():
    """p = 0 is task arithmetic exactly. With p = 0.5 one draw keeps about half of a task
    vector's 200 entries (measured 46.5 %; bound 38–62 %, ±3.4σ) rescaled by 2. The mean over
    N seeds approaches task arithmetic: each entry's error has std λ·√(K·p/(1−p)/N) with
    τ ~ N(0, 1), λ = 0.7, K = 2, so the expected mean |error| is 0.16 for N = 25 and 0.040
    for N = 400; measured 0.121 and 0.035. Bounds: < 0.06 at 400 and under half of 25's."""
    base, taus = _random_problem(k=2)
    states = states_from(base, taus)
    ta = method("task_arithmetic", scaling=0.7).combine(base, states, [0.5, 0.5])
    exact = method("dare", p=0.0, scaling=0.7).combine(base, states, [0.5, 0.5])
    torch.testing.assert_close(exact["w"], ta["w"], rtol=0, atol=1e-12)

    one = method("dare", p=0.5, seed=3).combine(base, states, [0.5, 0.5])
    again = method("dare", p=0.5, seed=3).combine(base, states, [0.5, 0.5])
    assert torch.equal(one["w"], again["w"])  # seeded
    kept = torch.isclose(one["w"] - base["w"], 2 * (taus[0]["w"] + taus[1]["w"])) | \
        torch.isclose(one["w"] - base["w"], 2 * taus[0]["w"]) | \
        torch.isclose(one["w"] - base["w"], 2 * taus[1]["w"]) | \
        torch.isclose(one["w"], base["w"])
    assert bool(kept.all())  # every entry is a rescaled subset of the task vectors
    from weightlab_taskvec.taskvec import dare_drop

    dropped = dare_drop({"w": taus[0]["w"]}, 0.5, torch.Generator().manual_seed(3))["w"]
    assert 0.38 < float((dropped != 0).double().mean()) < 0.62

    def mean_error(n):
        mean = sum(method("dare", p=0.5, seed=s, scaling=0.7).combine(base, states, [0.5, 0.5])
                   ["w"] for s in range(n)) / n
        return float((mean - ta["w"]).abs().mean())

    few, many = mean_error(25), mean_error(400)
    assert many < 0.06 and many < few / 2, (few, many)


def test_dare_ties_elects_signs_of_the_rescaled_survivors():
    """p = 0 with combine=ties is TIES without a trim (density 1)."""
    base, taus = _random_problem(k=3, seed=1)
    states = states_from(base, taus)
    a = method("dare", p=0.0, combine="ties").combine(base, states, [1 / 3] * 3)
    b = method("ties", density=1.0).combine(base, states, [1 / 3] * 3)
    torch.testing.assert_close(a["w"], b["w"], rtol=0, atol=1e-12)


def test_model_stock_ratio_from_a_known_angle():
    """Two task vectors 60° apart: cos = ½, t = 2·½/(½ + 1) = ⅔; three at pairwise 60°
    ((1,1,0), (0,1,1), (1,0,1)): t = 3·½/(2·½ + 1) = ¾. θ = t·θ_avg + (1 − t)·θ_b."""
    assert float(model_stock_ratio(0.5, 2)) == pytest.approx(2 / 3)
    assert float(model_stock_ratio(1.0, 5)) == pytest.approx(1.0)
    assert float(model_stock_ratio(0.0, 5)) == pytest.approx(0.0)
    base = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    taus = [{"w": torch.tensor([2.0, 0.0], dtype=torch.float64)},
            {"w": torch.tensor([math.cos(math.pi / 3), math.sin(math.pi / 3)],
                               dtype=torch.float64)}]
    out = method("model_stock").combine(base, states_from(base, taus), [0.5, 0.5])
    expected = base["w"] + (2 / 3) * (taus[0]["w"] + taus[1]["w"]) / 2
    torch.testing.assert_close(out["w"], expected, rtol=0, atol=1e-12)

    base3 = {"w": torch.zeros(3, dtype=torch.float64)}
    taus3 = [{"w": torch.tensor(v, dtype=torch.float64)}
             for v in ([1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0])]
    out3 = method("model_stock").combine(base3, states_from(base3, taus3), [1 / 3] * 3)
    torch.testing.assert_close(out3["w"], 0.75 * torch.full((3,), 2 / 3, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_slerp_endpoints_and_norm():
    """t = 0/1 give the endpoints; orthogonal equal-norm [3, 4, 0] and [0, 0, 5] at t = ½:
    sin(π/4)·(v0 + v1) = [2.121, 2.828, 3.536], norm 5 (a lerp would give 3.536)."""
    v0 = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    v1 = torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(slerp(v0, v1, 0.0), v0)
    torch.testing.assert_close(slerp(v0, v1, 1.0), v1)
    mid = slerp(v0, v1, 0.5)
    torch.testing.assert_close(mid, math.sin(math.pi / 4) * (v0 + v1))
    assert float(mid.norm()) == pytest.approx(5.0)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g,
                                                                           dtype=torch.float64)
    b = b * a.norm() / b.norm()
    for t in (0.1, 0.3, 0.8):
        assert float(slerp(a, b, t).norm()) == pytest.approx(float(a.norm()))
    # the component: in task space around the base, and in weight space
    base = {"w": torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)}
    states = [{"w": base["w"] + v0}, {"w": base["w"] + v1}]
    for t, want in ((0.0, v0), (1.0, v1), (0.5, mid)):
        out = method("slerp", t=t).combine(base, states, [0.5, 0.5])
        torch.testing.assert_close(out["w"], base["w"] + want)
    w = method("slerp", t=0.5, space="weights").combine(base, states, [0.5, 0.5])
    torch.testing.assert_close(w["w"], slerp(states[0]["w"], states[1]["w"], 0.5))


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_buffers_are_averaged_and_counters_come_from_the_base():
    """Parameters go through the method; running statistics are the weighted average of the
    fine-tuned models' (a TIES trim or a DARE rescale of a variance would make no sense) and
    num_batches_tracked is the base's."""
    torch.manual_seed(0)
    base = BNNet()
    tuned = []
    for k in range(2):
        m = BNNet()
        with torch.no_grad():
            m.bn.running_mean.fill_(k + 1.0)
            m.bn.running_var.fill_(2.0 * (k + 1))
            m.bn.num_batches_tracked.fill_(10 * (k + 1))
        tuned.append(m)
    base.bn.num_batches_tracked.fill_(7)
    res = merge_from_base(base, tuned, [0.25, 0.75], method=method("task_arithmetic",
                                                                   scaling=0.5))
    st = res.model.state_dict()
    assert torch.allclose(st["bn.running_mean"], torch.full((4,), 0.25 * 1 + 0.75 * 2))
    assert torch.allclose(st["bn.running_var"], torch.full((4,), 0.25 * 2 + 0.75 * 4))
    assert int(st["bn.num_batches_tracked"]) == 7
    # parameters: θ_b + λ Σ ω_k τ_k with ω = K·w = (0.5, 1.5)
    want = base.fc.weight + 0.5 * (0.5 * (tuned[0].fc.weight - base.fc.weight)
                                   + 1.5 * (tuned[1].fc.weight - base.fc.weight))
    torch.testing.assert_close(st["fc.weight"], want.detach())
    with pytest.raises(UsageError, match="merges exactly two models"):
        merge_from_base(base, tuned + [base], [1 / 3] * 3, method=method("slerp"))
