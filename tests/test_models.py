"""Every built-in model builds from its name and runs forward and backward at its input shape;
sizes match the SPEC; a ResNet depth that is not 6n+2 is an error; init schemes do what they say."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from weightlab import plugins
from weightlab.errors import UsageError
from weightlab.models.layers import ChannelLayerNorm

CIFAR = (3, 32, 32)

# name → (input shape, parameter values implied by the name)
MODELS = {
    "cifar_vgg11": (CIFAR, {"depth": 11, "norm": "none", "bias": True, "width": 1}),
    "cifar_vgg13": (CIFAR, {"depth": 13}),
    "cifar_vgg16": (CIFAR, {"depth": 16}),
    "cifar_vgg19": (CIFAR, {"depth": 19}),
    "cifar_vgg16_bn": (CIFAR, {"norm": "bn"}),
    "cifar_vgg16_ln": (CIFAR, {"norm": "ln"}),
    "cifar_vgg16_nobias": (CIFAR, {"norm": "none", "bias": False}),
    "cifar_vgg11_bn_2x": (CIFAR, {"depth": 11, "norm": "bn", "width": 2}),
    "cifar_resnet20": (CIFAR, {"depth": 20, "norm": "bn", "width": 1}),
    "cifar_resnet20_ln": (CIFAR, {"norm": "ln"}),
    "cifar_resnet20_2x": (CIFAR, {"width": 2}),
    "cifar_resnet32": (CIFAR, {"depth": 32}),
    "plain_cifar_resnet20": (CIFAR, {"norm": "none", "bias": True}),
    "plain_cifar_resnet20_nobias": (CIFAR, {"norm": "none", "bias": False}),
    "fixup_cifar_resnet20": (CIFAR, {"norm": "fixup"}),
    "mlp": ((1, 28, 28), {"activation": "relu", "bias": True}),
    "resnet18": (CIFAR, {"arch": "resnet18"}),  # torchvision's, at a small input
    "convnext": ((1, 28, 28), {"width": 32, "depths": [2, 2], "stem": 2, "layer_scale": 1e-6}),
    "convnext_w16_d1x2x1": (CIFAR, {"width": 16, "depths": [1, 2, 1]}),
}


def _build(name, shape, num_classes=10, **params):
    comp = plugins.registry().create("models", name, params)
    torch.manual_seed(0)
    return comp, comp.build(shape, num_classes)


def _norms(net):
    return {type(m).__name__ for m in net.modules()
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, ChannelLayerNorm, nn.LayerNorm))}


@pytest.mark.parametrize("name", list(MODELS))
def test_builds_runs_forward_and_backward(name):
    shape, implied = MODELS[name]
    comp, net = _build(name, shape)
    assert {k: comp.params_dict()[k] for k in implied} == implied
    x = torch.randn(2, *shape)
    out = net(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([3, 7])).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    nonzero = {n for n, g in grads.items() if g.abs().sum() > 0}
    if name.startswith("fixup"):
        # Fixup starts with a zero head and zero second convs: only the head gets a gradient
        assert (net.linear.weight == 0).all() and {"linear.weight", "linear.bias"} <= nonzero
    else:
        assert len(nonzero) >= 0.9 * len(grads)

    norms = _norms(net)
    if "_bn" in name or name in ("cifar_resnet20", "cifar_resnet20_2x", "cifar_resnet32"):
        assert "BatchNorm2d" in norms and "ChannelLayerNorm" not in norms
    elif "_ln" in name:
        assert norms == {"ChannelLayerNorm"}
    elif name.startswith("convnext"):  # channels-first in stem/downsampling, -last in blocks
        assert norms == {"ChannelLayerNorm", "LayerNorm"}
    elif name != "resnet18":
        assert norms == set()
    biases = [n for n, _ in net.named_parameters() if n.endswith(".bias")]
    if "nobias" in name:
        assert biases == []
    if name.startswith("plain_") and "nobias" not in name:
        assert "conv1.bias" in biases and "layer1.0.conv2.bias" in biases


def test_widths_and_depths_follow_the_name():
    _, net = _build("cifar_resnet20_2x", CIFAR)
    assert net.conv1.out_channels == 32 and net.linear.in_features == 128
    assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    _, net = _build("cifar_resnet32", CIFAR)
    assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3)] == [5, 5, 5]
    _, net = _build("cifar_vgg11_bn_2x", CIFAR)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and convs[0].out_channels == 128 and convs[-1].out_channels == 1024
    _, net = _build("cifar_vgg19", CIFAR)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 16
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 4


def test_parameter_counts_match_the_spec():
    def count(name, shape=CIFAR, **p):
        return sum(t.numel() for t in _build(name, shape, **p)[1].parameters())

    assert count("cifar_resnet20") == 272_474
    assert count("cifar_vgg16") == 14_719_818
    # MLP 784-512-512-512-10 with biases: 784·512 + 2·512² + 512·10 + 3·512 + 10
    assert count("mlp", (1, 28, 28)) == 784 * 512 + 2 * 512**2 + 512 * 10 + 3 * 512 + 10
    assert count("mlp", (1, 28, 28), bias=False) == 784 * 512 + 2 * 512**2 + 512 * 10


def test_linear_mlp_has_no_activation_and_is_linear():
    _, net = _build("mlp", (1, 8, 8), activation="none", bias=False, depth=2, width=32)
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())
    x1, x2 = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(net(2 * x1 - 3 * x2), 2 * net(x1) - 3 * net(x2))
    _, relu = _build("mlp", (1, 8, 8), depth=2, width=32)
    assert sum(isinstance(m, nn.ReLU) for m in relu.modules()) == 2


@pytest.mark.parametrize("name", ["cifar_resnet21", "cifar_resnet22", "plain_cifar_resnet18",
                                  "fixup_cifar_resnet4"])
def test_depth_not_6n_plus_2_is_an_error(name, cli):
    with pytest.raises(UsageError, match=r"is not 6n\+2"):
        _build(name, CIFAR)
    code, _, err = cli("show", "models", name)
    assert code == 2 and "not 6n+2" in err and "Traceback" not in err


def test_depth_parameter_not_6n_plus_2_is_an_error():
    comp = plugins.registry().create("models", "cifar_resnet", {"depth": 22})
    with pytest.raises(UsageError, match="depth 22 is not 6n"):
        comp.build(CIFAR, 10)


def test_vgg_init_zero_biases_kaiming_convs_and_small_linear():
    """measured: last conv std 0.02082 (Kaiming fan-out √(2/4608) = 0.02083), head std
    0.01010 (target 0.01)."""
    _, net = _build("cifar_vgg16_bn", CIFAR, init="vgg_init")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert (m.bias == 0).all()
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    conv = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]  # 512→512, 2.4M weights
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)
    assert conv.weight.mean().abs().item() < 1e-3
    head = net.classifier[0]
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_lecun_normal_std_is_one_over_sqrt_fan_in():
    """measured: MLP stds 0.03569, 0.04425, 0.04423 (1/√784 = 0.03571, 1/√512 = 0.04419);
    PyTorch default 0.020618 (1/√(3·784) = 0.020620); ResNet-20 conv 0.04167 (1/√576)."""
    _, net = _build("mlp", (1, 28, 28), init="lecun_normal")
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for m in linears[:3]:  # 784→512, 512→512, 512→512
        assert m.weight.std().item() == pytest.approx(1 / math.sqrt(m.in_features), rel=0.02)
        assert (m.bias == 0).all()
    # PyTorch's default (kaiming_uniform with a=√5) is std 1/√(3·fan_in): a third the variance
    _, default = _build("mlp", (1, 28, 28))
    w = [m for m in default.modules() if isinstance(m, nn.Linear)][0].weight
    assert w.std().item() == pytest.approx(1 / math.sqrt(3 * 784), rel=0.02)
    _, conv_net = _build("cifar_resnet20", CIFAR, init="lecun_normal")
    w = conv_net.layer3[0].conv2.weight  # 64·64·9 weights, fan_in 576
    assert w.std().item() == pytest.approx(1 / math.sqrt(576), rel=0.03)


@pytest.mark.parametrize(("spec", "expect"), [
    # spec → (sample statistic of the 512×784 first weight, its target), re-stated from the
    # definitions: N(μ, σ²); U(a, b) has std (b − a)/√12; Kaiming fan-in ReLU std √(2/784);
    # Xavier uniform bound gain·√(6/(784 + 512)) → std bound/√3
    ("normal:std=0.002", ("std", 0.002)),
    ("normal:std=0.05,mean=0.1", ("mean", 0.1)),
    ("uniform:a=-0.2,b=0.2", ("std", 0.4 / math.sqrt(12))),
    ("kaiming_normal", ("std", math.sqrt(2 / 784))),
    ("kaiming_uniform:mode=fan_out", ("std", math.sqrt(2 / 512))),
    ("xavier_normal:gain=2", ("std", 2 * math.sqrt(2 / (784 + 512)))),
    ("xavier_uniform", ("std", math.sqrt(6 / (784 + 512)) / math.sqrt(3))),
])
def test_parameterized_inits_draw_from_the_stated_distribution(spec, expect):
    """401,408 draws per statistic: measured within 0.5% of the target for every scheme; the
    tolerance is 3%. Biases are zeroed (as the VF linear-MLP notebook does)."""
    _, net = _build("mlp", (1, 28, 28), init=spec)
    w = net.layers[1].weight
    stat, target = expect
    got = (w.mean() if stat == "mean" else w.std()).item()
    assert got == pytest.approx(target, rel=0.03)
    assert all((m.bias == 0).all() for m in net.modules() if isinstance(m, nn.Linear))
    if spec.startswith("uniform"):
        assert w.min() >= -0.2 and w.max() <= 0.2


@pytest.mark.parametrize(("spec", "message"), [
    ("normall", "did you mean 'normal'"), ("normal:sd=1", "keys: mean, std"),
    ("normal:std=x", "std='x' is not a number"), ("normal:std=0", "std must be > 0"),
    ("uniform:a=1,b=0", "expected a < b")])
def test_bad_init_specs_are_one_line_errors(spec, message):
    from weightlab.errors import ParamError

    with pytest.raises(ParamError, match=message):
        plugins.registry().create("models", "mlp", {"init": spec})


@pytest.mark.parametrize(("spec", "stat", "target"), [
    # re-stated from the definitions for one E × E projection (E = 64): N(0, σ²);
    # Kaiming fan-in ReLU std √(2/64); LeCun std 1/√64
    ("normal:std=0.002", "std", 0.002),
    ("kaiming_normal", "std", math.sqrt(2 / 64)),
    ("lecun_normal", "std", 1 / math.sqrt(64)),
])
def test_inits_reach_attention_input_projections(spec, stat, target):
    """nn.MultiheadAttention's packed in_proj_weight (3E × E, a bare parameter) is drawn as three
    E × E linears: each of Q, K, V has the scheme's statistic (4,096 draws each; measured within
    0.5 % of the target, tolerance 8 %), its bias is zero, and out_proj (a Linear) is drawn too."""
    _, net = _build("vit_d2_w64_p7_h4", (1, 28, 28), init=spec)
    attn = net.blocks[0].attn
    for i in range(3):
        w = attn.in_proj_weight[i * 64:(i + 1) * 64]
        assert w.std().item() == pytest.approx(target, rel=0.08), i
    assert (attn.in_proj_bias == 0).all()
    assert attn.out_proj.weight.std().item() == pytest.approx(target, rel=0.08)


def _convnext_count(c, w, depths, classes=10, k=7, r=4, stem=2, gamma=True):
    """ConvNeXt's parameters, re-stated from the architecture: stem conv c·w·s² + w and its
    LayerNorm 2w; per block of d channels a depthwise conv d·k² + d, a LayerNorm 2d, Linear
    d → rd (r·d² + rd), Linear rd → d (r·d² + d) and γ (d); per downsampling a LayerNorm 2d and
    a 2×2 conv d·2d·4 + 2d; the head's LayerNorm 2D and Linear D·classes + classes."""
    total = c * w * stem ** 2 + w + 2 * w
    d = w
    for i, n in enumerate(depths):
        if i:
            total += 2 * d + d * 2 * d * 4 + 2 * d
            d *= 2
        total += n * (d * k * k + d + 2 * d + r * d * d + r * d + r * d * d + d + d * gamma)
    return total + 2 * d + d * classes + classes


def test_convnext_parameter_count_follows_the_architecture():
    def count(name, shape, **p):
        return sum(t.numel() for t in _build(name, shape, **p)[1].parameters())

    assert count("convnext_w32_d2x2", (1, 28, 28)) == _convnext_count(1, 32, [2, 2]) == 102_378
    assert count("convnext_w16_d1x2x1", CIFAR) == _convnext_count(3, 16, [1, 2, 1])
    assert count("convnext", (1, 28, 28), layer_scale=0) == _convnext_count(1, 32, [2, 2],
                                                                            gamma=False)
    assert count("convnext", (1, 28, 28), kernel=3, mlp_ratio=2, stem=4) == _convnext_count(
        1, 32, [2, 2], k=3, r=2, stem=4)


def test_convnext_layout_and_the_papers_init():
    """The stem is a 2×2 stride-2 conv (14×14 maps on MNIST), each stage doubles the width
    behind a 2×2 stride-2 conv, blocks hold a 7×7 depthwise conv, LayerNorms have ε = 1e-6,
    γ starts at 1e-6, conv/linear biases are 0 and their weights are truncated normal σ = 0.02
    (measured on the 64 → 256 linear: 0.0200 over 16,384 draws; tolerance 5 %)."""
    _, net = _build("convnext_w32_d2x2", (1, 28, 28))
    stem = net.stem[0]
    assert stem.kernel_size == stem.stride == (2, 2) and stem.out_channels == 32
    assert net.stem(torch.zeros(1, 1, 28, 28)).shape == (1, 32, 14, 14)
    down = net.stages[1][1]
    assert down.kernel_size == down.stride == (2, 2)
    assert (down.in_channels, down.out_channels) == (32, 64)
    block = net.stages[2][0]
    assert block.dwconv.groups == 64 and block.dwconv.kernel_size == (7, 7)
    assert block.pwconv1.out_features == 256 and block.pwconv2.out_features == 64
    assert (block.layer_scale == 1e-6).all() and block.layer_scale.requires_grad
    assert all(m.eps == 1e-6 for m in net.modules()
               if isinstance(m, (nn.LayerNorm, ChannelLayerNorm)))
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all((m.bias == 0).all() for m in layers)
    w = block.pwconv1.weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.abs().max() < 0.02 * 6
    _, other = _build("convnext_w32_d2x2", (1, 28, 28), init="normal:std=0.1")
    assert other.stages[2][0].pwconv1.weight.std().item() == pytest.approx(0.1, rel=0.05)


def test_convnext_computes_what_timm_computes():
    """An independent implementation: timm's ConvNeXt (4 stages, patch stem 4, ε = 1e-6, γ as
    a (C,) vector), given our weights tensor for tensor, gives our logits to 1e-5 at 32×32."""
    timm = pytest.importorskip("timm")
    _, ours = _build("convnext_w8_d1x2x1x1", CIFAR, stem=4, layer_scale=0.5)
    ref = timm.models.convnext.ConvNeXt(in_chans=3, num_classes=10, depths=(1, 2, 1, 1),
                                        dims=(8, 16, 32, 64), patch_size=4, ls_init_value=0.5)
    theirs = ref.state_dict()
    assert len(theirs) == len(ours.state_dict())
    # both list each block's γ first and every other tensor in the same order
    mapped = {k: v.reshape(theirs[k].shape)
              for k, v in zip(theirs, ours.state_dict().values(), strict=True)}
    ref.load_state_dict(mapped)
    x = torch.randn(4, *CIFAR)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)


def test_convnext_is_buildable_by_name_and_invariant(cli):
    """`convnext_w32_d2x2` on 28×28 MNIST: 6 free spaces (the two stages' streams and four
    MLP hidden spaces); a random permutation changes the outputs by 5.5e-16 relative
    (measured)."""
    res = cli.json("graph", "convnext_w32_d2x2", "--check")
    assert res["input_shape"] == [1, 28, 28] and res["free_spaces"] == 6
    assert res["check"]["invariant"] and res["check"]["relative"] < 1e-12


@pytest.mark.parametrize(("name", "params", "message"), [
    ("convnext_w16_d1x1x1x1x1", {}, "smaller than 1 pixel after the stem (2×2) and 4"),
    ("convnext", {"kernel": 4}, "kernel 4 is even"),
])
def test_convnext_bad_sizes_are_one_line_errors(name, params, message):
    with pytest.raises(UsageError, match=re.escape(message)) as e:
        _build(name, (1, 28, 28), **params)
    assert len(str(e.value).splitlines()) == 1


def test_convnext_too_deep_for_the_image_from_the_cli(cli):
    code, _, err = cli("graph", "convnext_w16_d1x1x1x1x1")
    assert code == 2 and "28×28 image is smaller than 1 pixel" in err and "Traceback" not in err


def test_convnext_stochastic_depth_is_training_only():
    """drop_path = 0.5 (the last block's rate; 0 for the first): in training two passes differ
    (branches dropped per sample), in eval mode the net is deterministic and the rates rise
    linearly over the 4 blocks (0, 1/6, 2/6, 3/6)."""
    _, net = _build("convnext_w8_d2x2", (1, 28, 28), drop_path=0.5, layer_scale=1.0)
    blocks = [b for stage in net.stages for b in stage if hasattr(b, "drop_path")]
    assert [b.drop_path for b in blocks] == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])
    x = torch.randn(8, 1, 28, 28)
    torch.manual_seed(1)
    assert not torch.equal(net.train()(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
