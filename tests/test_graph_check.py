"""``weightlab graph MODEL|CKPT [--check]`` and ``weightlab.graph_info``: the traced channel
spaces and the permutation-invariance check, from the CLI and from Python."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from weightlab.graph import FeatureGraph, Space
from weightlab.graph.check import permutation_check
from weightlab.graph.spaces import Entry


def test_graph_check_of_a_resnet_from_the_cli(cli):
    """cifar_resnet8: 8 spaces (input, 6 free incl. the two residual streams, logits); a random
    permutation of the free ones changes the outputs by 2.6e-16 relative (float64)."""
    res = cli.json("graph", "cifar_resnet8", "--check")
    assert (res["free_spaces"], len(res["spaces"]), res["layers"]) == (6, 8, 10)
    fixed = {s["reason"] for s in res["spaces"] if not s["free"]}
    assert fixed == {"input", "logits"}
    stream = next(s for s in res["spaces"] if "layer2.0.shortcut.0" in s["producers"])
    assert stream["producers"] == ["layer2.0.conv2", "layer2.0.shortcut.0"]
    assert res["check"]["invariant"] and res["check"]["relative"] < 1e-12
    assert res["check"]["permuted_spaces"] == 6


def test_graph_check_from_python_and_on_a_checkpoint(digits_ckpt):
    import weightlab

    res = weightlab.graph_info(str(digits_ckpt), check=True)
    assert res["input_shape"] == [1, 8, 8] and res["check"]["invariant"]


class _TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _spec(net, with_consumer: bool) -> FeatureGraph:
    hidden = [Entry("fc1.weight", 0), Entry("fc1.bias", 0)]
    if with_consumer:
        hidden.append(Entry("fc2.weight", 1))
    return FeatureGraph.from_spaces([Space(0, 4, [Entry("fc1.weight", 1)], fixed=True,
                                           reason="input"),
                                     Space(1, 6, hidden, producers=["fc1"]),
                                     Space(2, 3, [Entry("fc2.weight", 0), Entry("fc2.bias", 0)],
                                           fixed=True, reason="logits")], net)


def test_the_check_catches_a_graph_that_misses_a_tie(cli, monkeypatch):
    """A hand spec that forgets fc2's input axis: permuting the hidden space then changes the
    outputs (measured relative change ≈ 1), so the check says not invariant; the CLI exits 1
    and says so. With the axis declared the same check passes."""
    net = _TwoLayers().eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    bad = permutation_check(net, _spec(net, False), x)
    good = permutation_check(net, _spec(net, True), x)
    assert not bad["invariant"] and bad["relative"] > 0.01
    assert good["invariant"] and good["relative"] < 1e-12
    import weightlab.graph.check as check

    monkeypatch.setattr(check, "permutation_check", lambda *a, **k: bad)
    code, out, err = cli("graph", "mlp", "--check")
    assert code == 1 and "NOT invariant" in err


def test_a_trace_on_the_wrong_input_shape_is_one_line(cli):
    code, _, err = cli("graph", "cifar_resnet8", "--input-shape", "5,8,8")  # 3 channels
    assert code == 1 and len(err.strip().splitlines()) == 1 and "does not run" in err


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf",
                                  "efficientnet_v2_s"])
def test_squeeze_excitation_and_stochastic_depth_models_are_invariant(name, cli):
    """torchvision models with SE gates (sigmoid/hardsigmoid × features: the gate's expand
    conv shares the gated space) and stochastic depth (identity in eval mode): a random
    permutation of every free space changes the outputs by ≤ 3.3e-15 relative (float64, 96×96
    inputs; measured 2.1e-15 … 3.2e-15). Before: "unsupported operation stochastic_depth" /
    "unsupported module … Hardsigmoid"."""
    res = cli.json("graph", name, "--check", "--input-shape", "3,96,96")
    assert res["check"]["invariant"] and res["check"]["relative"] < 1e-12
    assert res["free_spaces"] >= 20


def test_convnext_channels_last_blocks_are_traced_and_invariant(cli):
    """ConvNeXt-T: depthwise conv, permute to channels-last, LayerNorm over C, pointwise
    linears (a hidden space of 4C), GELU, permute back, layer scale (C, 1, 1), stochastic depth,
    residual; LayerNorm2d between stages. 22 free spaces (4 residual streams, 18 block hidden
    spaces), only input and logits fixed; a random permutation changes the outputs by 2.3e-15
    relative (float64, 64×64 inputs). Before: "unsupported operation torch.permute"."""
    res = cli.json("graph", "convnext_tiny", "--check", "--input-shape", "3,64,64")
    assert res["free_spaces"] == 22
    assert {s["reason"] for s in res["spaces"] if not s["free"]} == {"input", "logits"}
    assert res["check"]["invariant"] and res["check"]["relative"] < 1e-12
    hidden = [s for s in res["spaces"] if any(p.startswith("features.1.") and
                                              p.endswith(".block.3") for p in s["producers"])]
    assert len(hidden) == 3 and all(s["free"] and s["size"] == 4 * 96 for s in hidden)


def test_activation_matching_reads_channels_last_features():
    """ConvNeXt-T (10 classes, random init) and a copy with a planted random permutation of all
    22 free spaces: activation matching on 256 random 32×32 inputs recovers every permutation,
    the 18 channels-last hidden spaces included (their features are read with the channel axis
    moved to 1; before, they had no feature point)."""
    import torchvision
    from weightlab import plugins
    from weightlab.alignment import permute_model, random_permutation
    from weightlab.graph import trace

    torch.manual_seed(0)
    a = torchvision.models.convnext_tiny(weights=None, num_classes=10).eval()
    g = trace(a, torch.randn(2, 3, 32, 32))
    assert all(s.feature_points for s in g.free_spaces())
    assert sum(p.endswith("@last") for s in g.free_spaces() for p in s.feature_points) >= 18
    known = random_permutation(g, torch.Generator().manual_seed(3))
    b = permute_model(a, g, known)
    gen = torch.Generator().manual_seed(4)
    data = [(torch.randn(64, 3, 32, 32, generator=gen), torch.zeros(64, dtype=torch.long))
            for _ in range(4)]
    found = plugins.registry().create("matchers", "activation", {"samples": 256}).match(
        g, a, b, data)
    inverse = known.inverse()
    assert all(torch.equal(found.perms[s], inverse.perms[s]) for s in inverse.perms)


@pytest.mark.parametrize("name", ["convnext_tiny", "efficientnet_b0", "mobilenet_v3_small"])
def test_flops_of_the_newly_traced_models_equal_torchs_counter(name):
    """weightlab's FLOP count (2 × MACs of every conv/linear, from its own hooks) against
    torch.utils.flop_counter.FlopCounterMode on the same model at 64×64 (an independent
    counter): measured equal to the FLOP for ConvNeXt-T (728,844,288), EfficientNet-B0
    (66,493,184) and MobileNetV3-S (13,032,960) — channels-last linears and SE convs
    included."""
    import torchvision
    import weightlab
    from torch.utils.flop_counter import FlopCounterMode

    ours = weightlab.flops(name, input_shape="3,64,64", num_classes=1000)["flops"]
    net = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 64, 64))
    assert ours == counter.get_total_flops()
