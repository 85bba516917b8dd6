"""The built-in model components: CIFAR VGG, CIFAR ResNet (norm / plain / Fixup), MLP, small
ViT and ConvNeXt, and torchvision ImageNet classifiers. The CIFAR VGG and ResNet names follow
the Vanishing Feature code."""

from __future__ import annotations

import math
from dataclasses import dataclass

from weightlab.components import Model
from weightlab.errors import UsageError
from weightlab.models.init import INIT_HELP, parse_spec
from weightlab.params import param

_INIT = param("default", INIT_HELP, check=parse_spec)  # raises ValueError on a bad spec


def blocks_per_stage(depth: int) -> int:
    """n of a CIFAR ResNet-(6n+2); any other depth is an error (checked when the name is read,
    before torch loads)."""
    if depth < 8 or (depth - 2) % 6:
        raise UsageError(f"cifar ResNet depth {depth} is not 6n+2 (20, 32, 44, 56, 110, …)")
    return (depth - 2) // 6


class CifarVGGModel(Model):
    """CIFAR VGG (Simonyan & Zisserman 2015, CIFAR variant): 3×3 convs with padding 1,
    four 2×2 max-pools, a 2×2 average pool to 1×1 and one linear head.

    Names: ``cifar_vgg{11,13,16,19}`` with ``_bn`` (BatchNorm), ``_ln`` (LayerNorm over the
    channels at each pixel) or ``_nobias`` (no norm, no biases), and ``_<k>x`` width.
    Example: ``weightlab train cifar_vgg16_bn_4x --data cifar10``.
    """

    name = "cifar_vgg"
    summary = "CIFAR VGG-11/13/16/19 with optional BatchNorm/LayerNorm, no-bias and width ×k"
    pattern = r"cifar_vgg(?P<depth>11|13|16|19)(?P<norm>_bn|_ln)?(?P<nobias>_nobias)?" \
              r"(?:_(?P<width>\d+)x)?"
    examples = ("cifar_vgg11", "cifar_vgg16", "cifar_vgg16_bn", "cifar_vgg16_ln",
                "cifar_vgg16_nobias", "cifar_vgg16_bn_4x", "cifar_vgg19_bn")

    @dataclass
    class Params:
        depth: int = param(16, "number of weight layers", choices=(11, 13, 16, 19))
        norm: str = param("none", "normalization after each conv", choices=("none", "bn", "ln"))
        bias: bool = param(True, "biases in convs and the head")
        width: int = param(1, "channel width multiplier", min=1)
        init: str = _INIT

    @classmethod
    def name_groups_to_params(cls, g):
        out = {"depth": int(g["depth"])}
        if "norm" in g:
            out["norm"] = g["norm"][1:]
        if "nobias" in g:
            out["bias"] = False
        if "width" in g:
            out["width"] = int(g["width"])
        return out

    def build(self, input_shape, num_classes):
        from weightlab.models.init import initialize
        from weightlab.models.vgg import CifarVGG

        p = self.params
        net = CifarVGG(p.depth, num_classes, input_shape[0], p.width, p.norm, p.bias)
        return initialize(net, p.init)


class CifarResNetModel(Model):
    """CIFAR ResNet-(6n+2) (He et al. 2016): stem, three stages of n basic blocks with
    16k/32k/64k channels, 1×1 conv shortcuts when downsampling, global pool, linear head.

    Names: ``cifar_resnet<N>`` (BatchNorm), ``_ln`` (LayerNorm), ``_<k>x`` width;
    ``plain_cifar_resnet<N>[_nobias]`` (no norm); ``fixup_cifar_resnet<N>`` (Fixup).
    A depth that is not 6n+2 is an error. cifar_resnet20 has 272,474 parameters.
    """

    name = "cifar_resnet"
    summary = "CIFAR ResNet-(6n+2): BatchNorm, LayerNorm, plain or Fixup; width ×k"
    pattern = r"(?P<kind>plain_|fixup_)?cifar_resnet(?P<depth>\d+)(?P<ln>_ln)?" \
              r"(?P<nobias>_nobias)?(?:_(?P<width>\d+)x)?"
    examples = ("cifar_resnet20", "cifar_resnet20_4x", "cifar_resnet20_ln", "cifar_resnet32",
                "plain_cifar_resnet20", "plain_cifar_resnet20_nobias", "fixup_cifar_resnet20")
    # the Vanishing Feature code (XingyuQu/VF source/models/*cifar_resnet.py, after open_lth):
    # segments.<s> → layer<s+1>, norm<k> → bn<k>, fc → linear; the rest is named alike
    foreign_layouts = {"vf": ((r"^segments\.0\.", "layer1."), (r"^segments\.1\.", "layer2."),
                              (r"^segments\.2\.", "layer3."), (r"(^|\.)norm(\d)\.", r"\1bn\2."),
                              (r"^fc\.", "linear."))}

    @dataclass
    class Params:
        depth: int = param(20, "6n+2 layers (20, 32, 44, 56, 110, …)", min=8)
        norm: str = param("bn", "normalization", choices=("bn", "ln", "none", "fixup"))
        bias: bool = param(True, "conv biases when there is no norm; head bias")
        shortcut_bias: bool = param(False, "plain ResNets: a bias on the 1×1 shortcut convs too "
                                           "(the seed code has none)")
        width: int = param(1, "channel width multiplier", min=1)
        init: str = _INIT

    @classmethod
    def name_groups_to_params(cls, g):
        out = {"depth": int(g["depth"])}
        blocks_per_stage(out["depth"])  # a depth that is not 6n+2 is an error, here and now
        kind = g.get("kind")
        out["norm"] = {"plain_": "none", "fixup_": "fixup"}.get(kind or "", "bn")
        if "ln" in g:
            out["norm"] = "ln"
        if "nobias" in g:
            out["bias"] = False
        if "width" in g:
            out["width"] = int(g["width"])
        return out

    def build(self, input_shape, num_classes):
        from weightlab.models.init import initialize
        from weightlab.models.resnet import CifarResNet

        p = self.params
        fixup = p.norm == "fixup"
        net = CifarResNet(p.depth, num_classes, input_shape[0], p.width,
                          "none" if fixup else p.norm, p.bias, fixup, p.shortcut_bias)
        return initialize(net, p.init) if not fixup else net


class MLPModel(Model):
    """Multi-layer perceptron on the flattened image: ``depth`` hidden layers of ``width``.

    With ``activation=none`` it is a linear network, whose logits split exactly into an
    input-induced and a bias-induced part (the diagnostic uses this).
    """

    name = "mlp"
    summary = "fully connected network: depth, width, bias on/off, activation on/off"
    default_input_shape = (1, 28, 28)

    @dataclass
    class Params:
        depth: int = param(3, "hidden layers", min=1)
        width: int = param(512, "hidden units per layer", min=1)
        bias: bool = param(True, "biases in every layer")
        activation: str = param("relu", "hidden activation", choices=("relu", "none"))
        init: str = _INIT

    def build(self, input_shape, num_classes):
        from weightlab.models.init import initialize
        from weightlab.models.mlp import MLP

        p = self.params
        net = MLP(math.prod(input_shape), num_classes, p.depth, p.width, p.bias, p.activation)
        return initialize(net, p.init)


class ViTModel(Model):
    """A small Vision Transformer for MNIST/CIFAR-sized images (patch-embedding conv, class
    token, position embeddings, pre-norm blocks with ``nn.MultiheadAttention`` and a GELU MLP).

    Names: ``vit`` or ``vit_d<depth>_w<dim>_p<patch>[_h<heads>]``, e.g. ``vit_d4_w64_p7``
    (4 blocks, 64 channels in 4 heads, 7×7 patches: 17 tokens on MNIST).
    """

    name = "vit"
    summary = "small Vision Transformer: depth, width, patch, heads (MNIST/CIFAR sized)"
    pattern = r"vit(?:_d(?P<depth>\d+))?(?:_w(?P<dim>\d+))?(?:_p(?P<patch>\d+))?" \
              r"(?:_h(?P<heads>\d+))?"
    examples = ("vit", "vit_d4_w64_p7", "vit_d6_w192_p4_h3")
    default_input_shape = (1, 28, 28)

    @dataclass
    class Params:
        depth: int = param(4, "transformer blocks", min=1)
        dim: int = param(64, "channels of the residual stream", min=1)
        patch: int = param(7, "patch size (must tile the image)", min=1)
        heads: int = param(4, "attention heads (must divide dim)", min=1)
        mlp_ratio: int = param(2, "MLP hidden width / dim", min=1)
        init: str = _INIT

    @classmethod
    def name_groups_to_params(cls, g):
        return {k: int(v) for k, v in g.items() if v is not None}

    def build(self, input_shape, num_classes):
        from weightlab.models.init import initialize
        from weightlab.models.vit import ViT

        p = self.params
        if p.dim % p.heads:
            raise UsageError(f"vit: dim {p.dim} does not split into {p.heads} heads")
        net = ViT(input_shape, num_classes, p.patch, p.depth, p.dim, p.heads, p.mlp_ratio)
        return initialize(net, p.init)


class ConvNeXtModel(Model):
    """A small ConvNeXt (Liu et al. 2022) for MNIST/CIFAR-sized images: patchify stem (a
    ``stem``×``stem`` stride-``stem`` conv, 2 by default: the small-image stand-in for
    ImageNet's 4×4 on 224 pixels) and a channels-first LayerNorm; stages of blocks
    (7×7 depthwise conv → LayerNorm → Linear 4× → GELU → Linear → layer scale γ → residual),
    LayerNorm + 2×2 stride-2 conv doubling the width between stages; global average pool →
    LayerNorm → Linear. Conv/linear weights truncated normal σ = 0.02, zero biases (the
    paper's init) unless ``init=`` names another scheme.

    Names: ``convnext`` or ``convnext_w<width>_d<d1>x<d2>[x<d3>…]``, e.g. ``convnext_w32_d2x2``
    (two stages of 2 blocks, 32 and 64 channels: 14×14 and 7×7 maps on 28×28 MNIST).
    ``convnext_tiny`` and the other ImageNet sizes are torchvision's (family ``torchvision``).
    """

    name = "convnext"
    summary = "small ConvNeXt: width, blocks per stage, stem patch (MNIST/CIFAR sized)"
    pattern = r"convnext(?:_w(?P<width>\d+))?(?:_d(?P<depths>\d+(?:x\d+)*))?"
    examples = ("convnext", "convnext_w32_d2x2", "convnext_w64_d2x2", "convnext_w32_d2x2x2")
    default_input_shape = (1, 28, 28)

    @dataclass
    class Params:
        width: int = param(32, "channels of the first stage (doubled at every stage)", min=1)
        depths: list[int] = param([2, 2], "blocks per stage (ConvNeXt-T: 3,3,9,3)", min=1)
        stem: int = param(2, "patchify stem: conv kernel = stride (ImageNet: 4)", min=1)
        kernel: int = param(7, "depthwise conv kernel (odd)", min=1)
        mlp_ratio: int = param(4, "inverted-bottleneck width / channels", min=1)
        layer_scale: float = param(1e-6, "initial layer scale γ (0: no layer scale)", min=0)
        drop_path: float = param(0.0, "stochastic depth rate of the last block, rising "
                                      "linearly from 0 (ConvNeXt-T on ImageNet: 0.1)",
                                 min=0, max=0.99)
        init: str = param("default", "initialization: default is the paper's (truncated "
                          "normal σ = 0.02 on conv/linear weights, zero biases); "
                          + INIT_HELP.split(": ", 1)[1], check=parse_spec)

    @classmethod
    def name_groups_to_params(cls, g):
        out = {}
        if "width" in g:
            out["width"] = int(g["width"])
        if "depths" in g:
            out["depths"] = [int(d) for d in g["depths"].split("x")]
        return out

    def build(self, input_shape, num_classes):
        from weightlab.models.convnext import ConvNeXt
        from weightlab.models.init import initialize

        p = self.params
        if p.kernel % 2 == 0:
            raise UsageError(f"convnext: kernel {p.kernel} is even; expected an odd size "
                             "(padding k // 2 keeps the map size)")
        try:
            net = ConvNeXt(input_shape, num_classes, p.width, tuple(p.depths), p.stem,
                           p.kernel, p.mlp_ratio, p.layer_scale, p.drop_path)
        except ValueError as e:
            raise UsageError(f"convnext: {e}") from None
        return initialize(net, p.init)


# every classifier of torchvision.models (torchvision 0.29; tests/test_graph_attention.py keeps
# this in step): all but maxvit_t are traced exactly (weightlab graph NAME --check)
TORCHVISION_CLASSIFIERS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny",
    "densenet121", "densenet161", "densenet169", "densenet201", "efficientnet_b0",
    "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
    "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m",
    "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75",
    "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf",
    "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf",
    "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf",
    "resnet101", "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x8d",
    "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b",
    "swin_s", "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13",
    "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14",
    "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)


class TorchvisionModel(Model):
    """An ImageNet classifier from torchvision, by its torchvision name (``resnet50``,
    ``vgg16_bn``, …), randomly initialised: no weights are downloaded. Bring trained weights
    with ``weightlab import FILE --model resnet50``."""

    name = "torchvision"
    summary = "torchvision ImageNet classifiers by name (resnet18, resnet50, vgg16_bn, …)"
    examples = ("resnet18", "resnet50", "vgg16_bn", "densenet121", "efficientnet_b0",
                "mobilenet_v3_small", "convnext_tiny", "swin_t", "vit_b_16")
    default_input_shape = (3, 224, 224)

    @dataclass
    class Params:
        arch: str = param("resnet18", "torchvision model name", choices=TORCHVISION_CLASSIFIERS)
        init: str = _INIT

    @classmethod
    def params_from_name(cls, name):
        if name == cls.name:
            return {}
        return {"arch": name} if name in TORCHVISION_CLASSIFIERS else None

    def build(self, input_shape, num_classes):
        import torchvision

        from weightlab.models.init import initialize

        net = torchvision.models.get_model(self.params.arch, weights=None,
                                           num_classes=num_classes)
        return initialize(net, self.params.init)


MODELS = [CifarVGGModel, CifarResNetModel, MLPModel, ViTModel, ConvNeXtModel,
          TorchvisionModel]
