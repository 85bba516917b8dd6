"""Real data: three copies of a trained MNIST MLP (2×128, one epoch; 96.06 % test top-1)
fine-tuned for one more epoch with seeds 10, 11, 12 (96.68, 96.73, 96.64 %), merged by each
method through core's ``merge`` operation and compared with their uniform soup (97.49 %).
Everything is seeded; the figures are what this machine measured (2-core CPU, one thread)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def measured(mnist_ingredients):
    """Test top-1 of the base, the ingredients, the soups and each merge."""
    import weightlab
    from weightlab.data.bundle import load_data
    from weightlab.metrics import evaluate

    root, base, tuned = mnist_ingredients
    test = load_data("mnist", data_dir=root).loader("test", batch_size=1000)

    def top1(**options):
        return evaluate(weightlab.merge(options.pop("models", tuned), evaluate=False,
                                        **options).model, test)["top1"]

    loaded = weightlab.ops.common.load_checkpoints([base, *tuned], "cpu", check=False)
    acc = {"base": evaluate(loaded.models[0], test)["top1"],
           "ingredients": [evaluate(m, test)["top1"] for m in loaded.models[1:]],
           "soup": top1(matcher="identity"),
           "soup_12": top1(models=tuned[:2], matcher="identity")}
    for key, method, params in [("ta_avg", "task_arithmetic", {"scaling": 1 / 3}),
                                ("ta_sum", "task_arithmetic", {"scaling": 1.0}),
                                ("ties", "ties", {"density": 0.2}),
                                ("dare", "dare", {"p": 0.5, "scaling": 1 / 3}),
                                ("model_stock", "model_stock", {})]:
        acc[key] = top1(base=base, method=method, method_param=params)
    acc["slerp"] = top1(models=tuned[:2], base=base, method="slerp")
    return acc


def test_task_arithmetic_at_one_over_k_is_the_uniform_soup(measured):
    """λ = 1/K: 97.49 %, the soup's 97.49 % (the same weights up to rounding). λ = 1 sums three
    task vectors of one task and overshoots: 93.60 %, 2.5 points below the base (bound: 1)."""
    assert measured["ta_avg"] == pytest.approx(measured["soup"], abs=2e-4)
    assert measured["soup"] > max(measured["ingredients"]) + 0.003  # 97.49 vs 96.73
    assert measured["ta_sum"] < measured["base"] - 0.01


def test_ties_dare_and_model_stock_beat_the_base_and_stay_near_the_soup(measured):
    """Measured: TIES (k = 20 %, λ = 1) 97.35 %, DARE (p = 0.5, λ = 1/K) 97.27 %, Model Stock
    97.48 %; base 96.06 %, best ingredient 96.73 %, soup 97.49 %. Each is ≥ 0.5 points above
    the base (margins 0.71–0.92) and within 0.5 points of the soup (margins 0.28–0.49)."""
    for key in ("ties", "dare", "model_stock"):
        assert measured[key] >= measured["base"] + 0.005, (key, measured[key])
        assert measured[key] >= measured["soup"] - 0.005, (key, measured[key])


def test_slerp_of_two_task_vectors_is_near_their_average(measured):
    """SLERP (t = ½) of ingredients 1 and 2: 97.16 %, their uniform soup 97.25 %, base
    96.06 %: within 0.3 points of the soup (0.09), ≥ 0.5 above the base."""
    assert abs(measured["slerp"] - measured["soup_12"]) <= 0.003
    assert measured["slerp"] >= measured["base"] + 0.005


