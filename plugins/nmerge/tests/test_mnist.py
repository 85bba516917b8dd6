"""Four MNIST MLPs merged into one with MergeMany and with C2M3 (real data, cached models)."""

from __future__ import annotations

import pytest
import torch
from weightlab import plugins, testing
from weightlab.merging import merge
from weightlab.metrics import evaluate


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mergemany", "c2m3"])
def test_four_mnist_mlps_merge_far_above_the_naive_average(mnist4, name):
    """Four MLPs (3×512, 2 epochs, lr 0.05, seeds 0–3; endpoints 97.54–97.67 % on the 10,000
    test images), equal weights. Naive average: 12.58 % (loss 2.239). Measured (this CPU):
    MergeMany 97.34 % (loss 0.195), converged in 21 rounds (the last without progress);
    C2M3 from the perturbed barycenter 97.32 % (loss 0.165), a zero Frank–Wolfe gap after
    75 iterations. Asserted: both above 95 % — 80 points above the naive average — and
    consistent (cycle error 0 over the 4 triples)."""
    models = mnist4["models"]
    graph = testing.trace(models[0], (1, 28, 28))
    naive = evaluate(merge(models, [0.25] * 4, matcher=None, graph=None).model, mnist4["test"])
    assert naive["top1"] < 0.15
    matcher = plugins.registry().create("matchers", name)
    torch.manual_seed(0)
    res = merge(models, [0.25] * 4, matcher=matcher, graph=graph)
    ev = evaluate(res.model, mnist4["test"])
    assert ev["top1"] > 0.95 and ev["top1"] > naive["top1"] + 0.80
    assert ev["loss"] < naive["loss"] / 10
    info = res.alignments[0].info
    assert info["cycle_error"] == 0.0 and info["models"] == 4
    if name == "mergemany":
        assert info["converged"] and info["rounds"] < 100
    else:
        assert info["stop"] in ("gap", "patience") and info["iterations"] < 200
