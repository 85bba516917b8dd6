"""Where the normalizers act, and how a per-channel affine correction is folded back.

A *place* is one conv/linear layer's output channel space. One hooked forward pass finds, for
every conv/linear module: its execution order (depth from the input in a chain), whether it
produces the logits (its output *is* the model's output; otherwise the last layer run), and
whether a per-channel-affine norm (BatchNorm, GroupNorm, LayerNorm over channels) reads its
output directly. Statistics are measured at the norm's output when there is one, else at the
layer's output ("the point"; for ``nn.MultiheadAttention``, whose output projection is
computed inside its forward, the attention's output); a correction z' = a ⊙ z + c there is
folded exactly into the norm's affine weight/bias, or into the layer's weight rows and bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from weightlab.errors import IncompatibleModelsError, UsageError
from weightlab.models.layers import ChannelLayerNorm

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, ChannelLayerNorm)


@dataclass
class Place:
    depth: int  # 1-based execution order of the layer among conv/linear layers
    name: str  # the layer's module name
    layer: nn.Module
    norm_name: str | None  # the per-channel-affine norm reading the layer's output directly
    norm: nn.Module | None
    logits: bool
    pre_norm: bool = False  # measured and corrected at the layer's output, before its norm
    # a module whose forward returns the layer's output as its first value, for a layer that
    # is never called itself: nn.MultiheadAttention computes out_proj functionally
    carrier: nn.Module | None = None
    carrier_name: str | None = None

    @property
    def point(self) -> nn.Module:
        """The module whose output (its first value, for a tuple) is measured and corrected."""
        if self.norm is not None and not self.pre_norm:
            return self.norm
        return self.carrier if self.carrier is not None else self.layer

    @property
    def point_name(self) -> str:
        return self.name if self.pre_norm else (self.norm_name or self.name)

    @property
    def channels(self) -> int:
        return self.layer.weight.shape[0]

    @property
    def channel_dim(self) -> int:
        # conv maps are N×C×…; linear outputs keep features last (N×C, or N×T×C).
        return 1 if isinstance(self.layer, _ConvNd) else -1


def _affine_norm_for(norm: nn.Module, channels: int) -> bool:
    """A norm whose output is γ_c·n(z) + β_c per channel: folding into γ, β is exact."""
    if isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) != (channels,):
        return False
    w, b = getattr(norm, "weight", None), getattr(norm, "bias", None)
    return w is not None and b is not None and w.numel() == channels and b.numel() == channels


@torch.no_grad()
def find_places(model: nn.Module, example: torch.Tensor) -> list[Place]:
    """Every conv/linear layer run by ``model(example)``, in execution order."""
    names = {id(m): n for n, m in model.named_modules()}
    calls: dict[str, int] = {}
    outputs: dict[str, torch.Tensor] = {}  # layer name → its output (kept alive for `is`)
    norm_inputs: dict[str, torch.Tensor] = {}

    def on_layer(mod, inp, out):
        name = names[id(mod)]
        calls[name] = calls.get(name, 0) + 1
        outputs[name] = out

    def on_norm(mod, inp, out):
        norm_inputs[names[id(mod)]] = inp[0]

    def on_attention(mod, inp, out):  # its output projection's output, into the stream
        name = f"{names[id(mod)]}.out_proj"
        calls[name] = calls.get(name, 0) + 1
        outputs[name] = out[0]
        carriers[name] = names[id(mod)]

    carriers: dict[str, str] = {}
    hooks = [(LAYERS, on_layer), (NORMS, on_norm), ((nn.MultiheadAttention,), on_attention)]
    handles = [m.register_forward_hook(fn) for m in model.modules()
               for kinds, fn in hooks if isinstance(m, kinds)]
    was_training = model.training
    model.eval()
    try:
        result = model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    reused = [f"{n} ({k} times)" for n, k in calls.items() if k > 1]
    if reused:
        raise UsageError(f"layer {reused[0]} runs more than once per forward pass; per-channel "
                         f"statistics need each conv/linear layer to run once")
    if not calls:
        raise UsageError(f"{type(model).__name__} has no conv or linear layer to normalize")
    modules = dict(model.named_modules())
    logits = next((n for n, out in outputs.items() if out is result), list(calls)[-1])
    places = []
    for depth, name in enumerate(calls, start=1):
        layer = modules[name]
        norm_name = next((nn_ for nn_, x in norm_inputs.items() if x is outputs[name]
                          and _affine_norm_for(modules[nn_], layer.weight.shape[0])), None)
        carrier = carriers.get(name)
        places.append(Place(depth, name, layer, norm_name,
                            modules[norm_name] if norm_name else None, name == logits,
                            carrier=modules[carrier] if carrier else None,
                            carrier_name=carrier))
    return places


def same_places(places: list[Place], other: nn.Module, label: str) -> list[Place]:
    """The same places in a model of the same architecture (looked up by module name)."""
    modules = dict(other.named_modules())
    out = []
    for p in places:
        for name, mod in ((p.name, p.layer), (p.norm_name, p.norm)):
            if name is None:
                continue
            twin = modules.get(name)
            if type(twin) is not type(mod) or twin.weight.shape != mod.weight.shape:
                raise IncompatibleModelsError(
                    f"{label}: module {name!r} does not match the model being normalized "
                    f"(expected {type(mod).__name__} with weight {tuple(mod.weight.shape)})")
        out.append(Place(p.depth, p.name, modules[p.name], p.norm_name,
                         modules[p.norm_name] if p.norm_name else None, p.logits, p.pre_norm,
                         modules[p.carrier_name] if p.carrier_name else None, p.carrier_name))
    return out


PLACEMENTS = ("all", "seed")


def select_places(places: list[Place], placement: str) -> list[Place]:
    """Where a renormalizer corrects (the logits layer never).

    ``all``: every conv/linear layer — stem and shortcuts included — at the following norm's
    output when there is one (REPAIR's notebook on BatchNorm nets), else at the layer's output;
    a layer with neither bias nor norm (the seed's plain ResNet shortcuts) cannot take a mean
    shift and is left alone, unless every layer is so (then: an error; use ``rescale``).

    ``seed``: what the Vanishing Feature code does (XingyuQu/VF ``source/utils/connect.py``,
    ``make_repaired_net``): in a CIFAR ResNet only the residual blocks' ``conv1``/``conv2`` — not
    the stem, not the shortcuts — elsewhere every conv layer (VGG's ``features``), each at the
    conv's own output, before its norm."""
    if placement not in PLACEMENTS:
        raise UsageError(f"placement={placement!r}: expected one of {', '.join(PLACEMENTS)}")
    places = [p for p in places if not p.logits]
    if placement == "all":
        return places
    resnet = any(".shortcut" in p.name or p.name.startswith("layer1.") for p in places)
    picked = []
    for p in places:
        if not isinstance(p.layer, _ConvNd):
            continue
        if resnet and not (p.name.startswith("layer") and
                           p.name.rsplit(".", 1)[-1] in ("conv1", "conv2")):
            continue
        picked.append(Place(p.depth, p.name, p.layer, p.norm_name, p.norm, False, True))
    if not picked:
        raise UsageError("placement='seed': this model has no conv layer to correct; "
                         "use placement='all'")
    return picked


def effective_bias(place: Place) -> torch.Tensor:
    """The input-independent part of the point's output per channel (its value for a zero
    layer input), float64. BatchNorm in eval mode is affine:
    β + γ·(b − running_mean)/√(running_var + ε); other norms map a constant to β."""
    layer, norm = place.layer, place.norm
    dev = layer.weight.device
    b = layer.bias.detach().double() if layer.bias is not None else \
        torch.zeros(place.channels, dtype=torch.float64, device=dev)
    if norm is None:
        return b
    beta = norm.bias.detach().double()
    if isinstance(norm, _BatchNorm) and norm.running_mean is not None:
        inv_std = (norm.running_var.double() + norm.eps).rsqrt()
        return beta + norm.weight.detach().double() * (b - norm.running_mean.double()) * inv_std
    return beta


def needs_bias(place: Place) -> bool:
    """A shift can be folded only into a norm's β, the layer's own bias or (corrected before
    the norm) a BatchNorm's running mean."""
    if place.pre_norm:
        return place.layer.bias is None and not isinstance(place.norm, _BatchNorm)
    return place.norm is None and place.layer.bias is None


@torch.no_grad()
def fold(place: Place, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
    """Make the point's output z' = scale ⊙ z + shift (per channel) by changing parameters."""
    if place.pre_norm and place.layer.bias is None and isinstance(place.norm, _BatchNorm):
        # BN(a·z + c) = γ(a·z + c − μ)/σ + β = (γ·a)(z − (μ − c)/a)/σ + β: exact with
        # γ ← γ·a and running_mean ← (μ − c)/a (σ unchanged)
        bn = place.norm
        a = (scale.double() if scale is not None else
             torch.ones(place.channels, dtype=torch.float64, device=bn.weight.device))
        c = shift.double() if shift is not None else torch.zeros_like(a)
        bn.running_mean.copy_(((bn.running_mean.double() - c) / a).to(bn.running_mean.dtype))
        bn.weight.mul_(a.to(bn.weight.dtype))
        return
    if place.norm is not None and not place.pre_norm:
        w, b = place.norm.weight, place.norm.bias  # output γ n + β → (scale γ) n + scale β + shift
    else:
        w, b = place.layer.weight, place.layer.bias  # rows of W and b scale with the output
    new_b = b.double() if b is not None else None
    if scale is not None:
        w.mul_(scale.to(w.dtype).view((-1,) + (1,) * (w.dim() - 1)))
        new_b = new_b * scale if new_b is not None else None
    if shift is not None:
        if new_b is None:
            raise UsageError(f"layer {place.name!r} has no bias to take the mean shift; "
                             f"use the 'rescale' normalizer (no shift) for bias-free models")
        new_b = new_b + shift
    if new_b is not None:
        b.copy_(new_b.to(b.dtype))
