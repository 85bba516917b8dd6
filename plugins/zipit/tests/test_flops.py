"""FLOP and parameter counts at the models' real input size: weightlab.flopcount against the
published sizes, against an independent count (torch.utils.flop_counter), through
``weightlab flops``, and for partially merged models."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from weightlab import testing
from weightlab.alignment import random_permutation
from weightlab.flopcount import count
from weightlab.graph import trace
from weightlab_cli.main import main
from weightlab_zipit.partial import MergePoint, build_partial


def _torch_flops(model: torch.nn.Module, shape) -> int:
    """FLOPs of one image counted by PyTorch's dispatcher (convolutions and matrix
    products, 2 per multiply-accumulate), independent of weightlab's module hooks."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    return counter.get_total_flops()


@pytest.mark.parametrize("name,params,mmac", [("cifar_resnet20", 272_474, 41),
                                              ("cifar_vgg16", 14_719_818, 313)])
def test_flops_match_spec_and_torch(name, params, mmac):
    """He et al. 2016 (CIFAR ResNet-20): 272,474 params and 41 MMAC (measured 40,813,184 MACs);
    cifar_vgg16 14,719,818 params (measured 313,201,664 MACs at 32×32, the count the
    CIFAR VGG papers quote as 0.31 GMAC)."""
    model = testing.tiny_model(name, (3, 32, 32))
    res = count(model, (3, 32, 32))
    assert res["params"] == params
    assert round(res["macs"] / 1e6) == mmac
    assert res["flops"] == 2 * res["macs"] == _torch_flops(model, (3, 32, 32))


def test_flops_command_agrees(capsys):
    code = main(["flops", "cifar_resnet20", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    model = testing.tiny_model("cifar_resnet20", (3, 32, 32))
    ref = count(model, (3, 32, 32))
    assert (out["macs"], out["params"]) == (ref["macs"], ref["params"])


@pytest.mark.parametrize("k", [0, 3, 9, 22])
def test_partial_model_flops_are_counted_like_a_model(k):
    """A partially merged cifar_resnet20 (22 conv/linear layers) costs one model plus its
    first k layers again in weightlab.flopcount (what PFM reports). Torch's counter agrees once
    the merge points are added: they are not conv/linear layers and are left out of the
    accounting (for a permutation or ZipIt! a channel average; implemented here as a dense
    C × C product per model and position, which is what torch counts)."""
    a = testing.tiny_model("cifar_resnet20", (3, 32, 32), seed=0).eval()
    b = testing.tiny_model("cifar_resnet20", (3, 32, 32), seed=1).eval()
    graph = trace(a, torch.zeros(2, 3, 32, 32))
    assert len(graph.layers) == 22
    net = build_partial([a, b], graph, random_permutation(graph), k, (3, 32, 32))
    res, base = count(net, (3, 32, 32)), count(a, (3, 32, 32))
    merge_flops = []
    for mod in net.modules():
        if isinstance(mod, MergePoint):
            mod.register_forward_hook(lambda m, inp, out: merge_flops.append(
                2 * m.blocks.numel() * out[0].numel() // m.blocks.shape[1]))
    total = _torch_flops(net, (3, 32, 32))
    assert res["flops"] + sum(merge_flops) == total
    assert (k in (0, 22)) == (not merge_flops)  # the input and logits are averaged
    order = {r["layer"]: r for r in base["layers"]}
    extra = sum(order[layer.name]["macs"] for layer in graph.layers[:k])
    assert res["macs"] == base["macs"] + extra
