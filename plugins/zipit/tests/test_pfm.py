"""Preserve-first merging sweeps on MNIST, and their cost accounting against weightlab.flopcount."""

from __future__ import annotations

import torch
from weightlab import testing
from weightlab.flopcount import count
from weightlab.graph import trace
from weightlab_zipit.pfm import sweep


def test_pfm_accuracy_rises_with_k(mnist_pair):
    """Two MNIST MLPs (97.0% / 96.8% on the first 2000 test images), naively averaged
    (identity matcher, no normalizer): preserving more layers recovers the ensemble.
    Measured top-1 for k = 0…3: 86.55, 89.8, 96.4, 96.8% (ensemble 97.05%)."""
    root, _, models = mnist_pair
    data = testing.tiny_data("mnist", data_dir=root)
    test = data.loader("test", batch_size=1000, num_samples=2000)
    graph = trace(models[0], torch.zeros(2, 1, 28, 28))
    res = sweep(models, graph, None, (1, 28, 28), test, range(4))
    acc = [r["top1"] for r in res["rows"]]
    assert all(b > a for a, b in zip(acc, acc[1:]))
    assert acc[0] < 0.90 and acc[-1] > 0.96 and acc[-1] - acc[0] > 0.08
    ensemble = res["references"][2]
    assert ensemble["model"] == "ensemble" and ensemble["top1"] >= acc[-1] - 0.005


def test_pfm_cost_is_weightlab_flops(mnist_pair):
    """Extra FLOPs of k preserved layers = 2 × their MACs in weightlab.flopcount' per-layer rows
    (preserved layers run twice); params likewise; k = L − 1 costs almost two models."""
    _, _, models = mnist_pair
    graph = trace(models[0], torch.zeros(2, 1, 28, 28))
    per_layer = count(models[0], (1, 28, 28))["layers"]
    x = torch.zeros(4, 1, 28, 28)
    res = sweep(models, graph, None, (1, 28, 28), [(x, torch.zeros(4, dtype=torch.long))],
                range(4))
    for row in res["rows"]:
        kept = per_layer[:row["k"]]
        assert row["extra_flops"] == 2 * sum(r["macs"] for r in kept)
        assert row["extra_params"] == sum(r["params"] for r in kept)
    assert [round(r["flops_ratio"], 3) for r in res["rows"]] == [1.0, 1.431, 1.713, 1.994]
    assert res["references"][2]["flops"] == 2 * res["base_cost"]["flops"]


def test_bias_calibration_counts_only_the_merged_layers_of_a_partial_model(mnist_pair):
    """k = 1 of the MNIST MLPs (4 linear layers): the two preserved copies of layer 1 equal
    their references (model A's, model B's) and keep their biases; the merged layers 2, 3, 4
    are h = 1, 2, 3 of the averaged ones: biases × 1, ½, ¼. Measured on the first 2000 test
    images: 89.8% uncorrected → 92.8% (counting the preserved copies as layers, as before,
    gave 92.75%: the ranking barely moves; what changes is that preserved layers are left
    alone)."""
    from torch import nn
    from weightlab import plugins
    from weightlab_repair.places import find_places
    from weightlab_zipit.partial import build_partial

    root, _, models = mnist_pair
    graph = trace(models[0], torch.zeros(2, 1, 28, 28))
    net = build_partial(models, graph, None, 1, (1, 28, 28))
    refs = [build_partial(models, graph, None, 1, (1, 28, 28), w) for w in ((1.0, 0.0),
                                                                            (0.0, 1.0))]
    fixed = plugins.registry().create("normalizers", "bias_calibration").apply(
        net, refs, [0.5, 0.5], None)
    after = dict(fixed.named_modules())
    factors = []
    for p in find_places(net, torch.zeros(1, 1, 28, 28)):
        assert isinstance(p.layer, nn.Linear)
        b0, b1 = p.layer.bias.detach(), after[p.name].bias.detach()
        factors.append(round(float((b1 @ b0) / (b0 @ b0)), 6))
        assert torch.allclose(b1, factors[-1] * b0)
    assert sorted(factors) == [0.25, 0.5, 1.0, 1.0, 1.0]  # two preserved copies, h = 1, 2, 3
    data = testing.tiny_data("mnist", data_dir=root)
    from weightlab.metrics import evaluate

    test = data.loader("test", batch_size=1000, num_samples=2000)
    acc_net, acc_fixed = evaluate(net, test)["top1"], evaluate(fixed, test)["top1"]
    assert acc_fixed >= acc_net + 0.02
