"""What the tracer knows about operations: which carry a channel space unchanged, which are
activations (their outputs are feature points), which combine spaces elementwise."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from weightlab.models.layers import ChannelLayerNorm

ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
               nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Mish, nn.PReLU)
# (upsampling resizes each channel's map on its own: HRNet's fuse layers)
CARRY_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd, nn.modules.pooling._MaxPoolNd,
                 nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                 nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample)
NORM_MODULES = (nn.modules.batchnorm._NormBase, ChannelLayerNorm, nn.LayerNorm, nn.GroupNorm)
ACT_FNS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish,
           F.hardsigmoid, F.hardtanh, F.softplus, F.mish, torch.sigmoid, torch.tanh, F.sigmoid,
           F.tanh}
ACT_METHODS = {"relu", "relu_", "sigmoid", "tanh", "sigmoid_", "tanh_"}
CARRY_FNS = {F.dropout, F.dropout2d, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
             F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.clamp,
             torch.clone, F.interpolate}
CARRY_METHODS = {"contiguous", "clone", "float", "double", "half", "to", "type_as", "detach",
                 "clamp", "clamp_"}
# (a power x ** p acts on each value alone: StarReLU's s · relu(x)² + b)
ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
               operator.isub, operator.imul, operator.neg, torch.add, torch.sub, torch.mul,
               torch.div, torch.addcmul, operator.pow, torch.pow}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "addcmul",
                       "addcmul_", "pow", "pow_"}
# by name, so that listing never imports torchvision: stochastic depth / drop path scale whole
# samples (identity in eval mode), which commutes with permuting channels
CARRY_FN_NAMES = {"torchvision.ops.stochastic_depth.stochastic_depth",
                  "timm.layers.drop.drop_path"}
RESHAPE = {torch.flatten, torch.reshape}
RESHAPE_METHODS = {"flatten", "view", "reshape", "reshape_as", "view_as"}
REDUCE = {torch.mean, torch.sum, torch.amax}
REDUCE_METHODS = {"mean", "sum", "amax"}


# nn.LayerNorm subclasses that normalize an NCHW map over its channels at each pixel
# (torchvision's and timm's ConvNeXt LayerNorm2d, and their subclasses: timm's
# LayerNorm2dNoBias in PoolFormerV2)
CHANNEL_LAYER_NORMS = {"LayerNorm2d"}


def channel_layer_norm(mod: nn.Module) -> bool:
    """Is ``mod`` a per-pixel LayerNorm over an NCHW map's channels (by class name, so that
    listing never imports timm or torchvision)?"""
    return any(c.__name__ in CHANNEL_LAYER_NORMS for c in type(mod).__mro__)


def equivariant(mod: nn.Module, c: int, ndim: int, last: bool = False) -> bool:
    """Does the norm commute with permuting channels? BatchNorm and per-pixel LayerNorm do;
    GroupNorm only with 1 or C groups; nn.LayerNorm only over exactly the channel axis (the
    last one: (N, C) features or a channels-last map)."""
    if isinstance(mod, nn.GroupNorm):
        return mod.num_groups in (1, c)
    if isinstance(mod, nn.LayerNorm):
        if channel_layer_norm(mod):  # per-pixel over the channels, NCHW
            return tuple(mod.normalized_shape) == (c,) and not last
        return tuple(mod.normalized_shape) == (c,) and (ndim == 2 or last)
    return True


def flat_nodes(x) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(x, lambda a: out.append(a) or a)
    return out


def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def op_name(n: fx.Node) -> str:
    t = n.target
    if n.op == "call_method":
        return f"Tensor.{t}"
    return f"{getattr(t, '__module__', '') or ''}.{getattr(t, '__name__', t)}".lstrip(".")
