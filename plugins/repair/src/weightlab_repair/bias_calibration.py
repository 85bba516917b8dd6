"""Data-free bias calibration from the Vanishing Feature analysis (Qu & Horváth, "Vanishing
Feature: Diagnosing Model Merging and Beyond", CPAL 2025, arXiv:2402.05966)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from weightlab.components import Normalizer
from weightlab.errors import UsageError
from weightlab.lazy import no_grad
from weightlab.params import param

if TYPE_CHECKING:  # torch loads when a model is calibrated, not when normalizers are listed
    import torch
    from torch import nn

PROBE_SIZES = (32, 28, 8, 64, 224)  # spatial sizes tried when no data shows the input shape


def probe_input(model: nn.Module) -> torch.Tensor:
    """A zero input the model accepts, guessed from its first conv/linear layer."""
    import torch
    from torch import nn

    from weightlab_repair.places import LAYERS
    from weightlab_repair.stats import model_device_dtype

    dev, dtype = model_device_dtype(model)
    first = next((m for m in model.modules() if isinstance(m, LAYERS)), None)
    if isinstance(first, nn.Linear):
        candidates = [(1, first.in_features)]
    elif first is not None:
        spatial = first.weight.dim() - 2
        candidates = [(1, first.in_channels) + (s,) * spatial for s in PROBE_SIZES]
    else:
        candidates = []
    with torch.no_grad():
        for shape in candidates:
            x = torch.zeros(shape, device=dev, dtype=dtype)
            try:
                model.eval()(x)
                return x
            except RuntimeError:
                continue
    raise UsageError(f"bias_calibration: cannot guess the input shape of {type(model).__name__}; "
                     f"pass calibration data (only its first batch is used, to order the layers)")


def copied_layers(places, references) -> set[str]:
    """Names of the layers equal (weight and bias) to the same layer of some reference."""
    import torch

    from weightlab_repair.places import same_places

    out = set()
    for i, ref in enumerate(references or []):
        for p, twin in zip(places, same_places(places, ref, f"reference {i + 1}"),
                           strict=True):
            if torch.equal(p.layer.weight, twin.layer.weight) and (
                    (p.layer.bias is None and twin.layer.bias is None) or
                    (p.layer.bias is not None and twin.layer.bias is not None and
                     torch.equal(p.layer.bias, twin.layer.bias))):
                out.add(p.name)
    return out


def merge_alpha(weights) -> float:
    """α = Σ_k w_k²: the share of each model's own input-induced pathway that survives one
    averaged layer of an unaligned merge with weights w_k (cross terms are incoherent)."""
    ws = [float(w) for w in (weights or [])]
    if not ws:
        raise UsageError("bias_calibration: no merge weights to derive alpha from; pass "
                         "alpha=… (½ for the midpoint of two models)")
    return sum(w * w for w in ws)


class BiasCalibration(Normalizer):
    """Data-free bias calibration (Qu & Horváth, "Vanishing Feature", 2024/2025).

    Reasoning: write each layer's output as an input-induced part plus a bias-induced part,
    f_h(x) = W_h f_{h-1}(x) + b_h. Averaging models with different initializations shrinks the
    input-induced part at every layer after the first — for the midpoint of two unaligned
    models only the coherent halves ½W_A·½f_A + ½W_B·½f_B survive, a factor α = ½ per layer;
    with merge weights w_k the coherent part is Σ_k w_k² W_k f_k, so α = Σ_k w_k² (½ for two
    equal weights, 1/N for N, 1 at an endpoint w = (1, 0)) — while each layer's own bias enters at
    full size, so deep in the network the input-independent offset dominates (the vanishing
    feature). The fix shrinks the bias-induced part in step with the input-induced one: the
    h-th layer counted from the input (h = 1 for the first) gets

        b_h ← α^(h−1) · b_h

    For a linear MLP whose merged layers shrink inputs by exactly α (W'_1 = W_1,
    W'_h = α W_h for h ≥ 2) this is exact: f'_h(x) = α^(h−1) f_h(x) at every layer, so the
    logits are a positive multiple of the unshrunk network's and every prediction is restored.

    Only averaged layers count: a layer whose weight and bias equal the same layer of one of
    the ``references`` (the preserved copies of a partially merged model, whose references are
    the same structure computing model A and model B) is one model's own layer — left alone
    and not counted, so the first merged layer after k preserved ones is h = 1.

    b_h is the layer's effective bias: with a BatchNorm after the layer (eval mode, affine) it
    is β + γ(b − running_mean)/√(running_var + ε) and the change folds into β; with a
    LayerNorm/GroupNorm after it, β. h follows the execution order of the conv/linear layers, found
    by one forward pass on the first calibration batch if data is given, else on a zero input
    of a guessed shape; in a chain (MLP, VGG) it is the depth, in a residual network it counts
    shortcut convolutions as layers of their own (an approximation). Returns a deep copy.
    """

    name = "bias_calibration"
    summary = "data-free: scale the h-th layer's bias by alpha^(h-1) (vanishing-feature fix)"
    needs_data = False

    @dataclass
    class Params:
        alpha: float = param(0.0, "per-layer shrink factor of input-induced features; 0: "
                                  "Σ_k w_k² of the merge weights (½ for the midpoint of two "
                                  "models)", min=0.0)

    @no_grad
    def apply(self, model, references, weights, data, graph=None):
        from weightlab_repair.places import effective_bias, find_places, fold, needs_bias
        from weightlab_repair.stats import first_batch

        net = copy.deepcopy(model)
        was_training = net.training
        example = first_batch(data, 2, net, self.name)[:2] if data is not None \
            else probe_input(net)
        places = find_places(net, example)
        copied = copied_layers(places, references)
        alpha = self.params.alpha or merge_alpha(weights)
        h = 0  # averaged layers so far, in execution order
        for place in places:
            if place.name in copied:
                continue  # one model's own layer: nothing averaged, nothing shrunk
            h += 1
            if needs_bias(place):
                continue  # no bias, no norm: its bias-induced part is already zero
            s = alpha ** (h - 1)
            fold(place, None, (s - 1.0) * effective_bias(place))  # b_eff → s·b_eff
        net.train(was_training)
        return net
