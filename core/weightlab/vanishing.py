"""The vanishing-feature diagnostic (Qu & Horváth 2024, "The Vanishing Feature"; §3
 of the paper).

For layer l, the input-induced feature is f_l(x) − f_l(0) (f_l(0): the layer's output for an
all-zero input); its magnitude m_l = mean over samples of ‖f_l(x) − f_l(0)‖₂ / √numel.
E_l = m_l(merged) / mean_i m_l(model_i) (merging) or m_l(pruned) / m_l(original) (pruning).
For linear MLPs each layer's output splits exactly into an input-induced part (all biases
zero) and a bias-induced part (= f_l(0)).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

TAPS = ("all", "layer", "norm")
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, NORM_TYPES) or type(m).__name__ == "ChannelLayerNorm"


def measured_layers(model: nn.Module, tap: str = "all") -> list[str]:
    """The modules whose outputs the diagnostic measures, in execution order.

    ``all``: every conv, linear and normalization layer — what the VF notebooks hook
    (``record_activations`` in main_notebooks/vf_in_merged_pruned_models.ipynb: Conv2d,
    Linear, BatchNorm2d, LayerNorm); ``layer``: conv and linear outputs only (before any norm);
    ``norm``: each conv/linear layer's output after the norm that reads it, where one does
    (where BatchNorm resets and REPAIR act), else the layer's own output."""
    if tap not in TAPS:
        from weightlab.errors import UsageError

        raise UsageError(f"tap={tap!r}: expected one of {', '.join(TAPS)}")
    order: list[str] = []
    outputs: dict[str, torch.Tensor] = {}
    norm_inputs: dict[str, torch.Tensor] = {}
    names = {m: n for n, m in model.named_modules()}

    def on_layer(mod, i, o):
        order.append(names[mod])
        outputs[names[mod]] = o

    def on_norm(mod, i, o):
        order.append(names[mod])
        norm_inputs[names[mod]] = i[0]

    handles = [m.register_forward_hook(on_norm if _is_norm(m) else on_layer)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) or _is_norm(m)]
    try:
        p = next(model.parameters())
        shape = getattr(model, "_weightlab_input_shape", None)
        if shape is None:
            raise RuntimeError("input shape unknown")
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    seen: list[str] = []
    for n in order:
        if n not in seen:
            seen.append(n)
    if tap == "all":
        return seen
    layers = [n for n in seen if n in outputs]
    if tap == "layer":
        return layers
    reader = {}  # layer → the norm whose input is exactly its output
    for norm, x in norm_inputs.items():
        for layer in layers:
            if outputs[layer] is x:
                reader[layer] = norm
    return [reader.get(n, n) for n in layers]


@contextlib.contextmanager
def _capture(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    out: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    handles = []
    for n in layers:
        def hook(mod, inp, o, n=n):
            out[n] = o.detach()
        handles.append(mods[n].register_forward_hook(hook))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def magnitudes(model: nn.Module, loader, layers: Sequence[str], *, samples: int = 2048
               ) -> dict[str, Any]:
    """m_l for each layer, plus logit statistics: mean ‖f(x)‖, ‖f(0)‖, mean ‖f(x) − f(0)‖."""
    model.eval()
    dev = next(model.parameters()).device
    sums = torch.zeros(len(layers), dtype=torch.float64, device=dev)
    logit_in = torch.zeros((), dtype=torch.float64, device=dev)
    logit_norm = torch.zeros((), dtype=torch.float64, device=dev)
    zero_out: dict[str, torch.Tensor] | None = None
    zero_logits = None
    n = 0
    with _capture(model, layers) as feats:
        for x, _ in loader:
            x = x[: samples - n].to(dev)
            if zero_out is None:
                zero_logits = model(torch.zeros_like(x[:1]))
                zero_out = {k: v.clone() for k, v in feats.items()}
            logits = model(x)
            for i, name in enumerate(layers):
                d = (feats[name] - zero_out[name]).flatten(1).double()
                sums[i] += (d.norm(dim=1) / d.shape[1] ** 0.5).sum()
            logit_in += (logits - zero_logits).double().norm(dim=1).sum()
            logit_norm += logits.double().norm(dim=1).sum()
            n += len(x)
            if n >= samples:
                break
    n = max(n, 1)
    return {"layers": list(layers), "m": (sums / n).tolist(),
            "logit_norm": float(logit_norm / n), "logit_input_norm": float(logit_in / n),
            "logit_offset_norm": float(zero_logits.double().norm()), "samples": n}


def bias_split(model: nn.Module, loader, layers: Sequence[str], *, samples: int = 2048
               ) -> dict[str, list[float]]:
    """Linear networks: input-induced part (forward with every bias zero) and bias-induced
    part (forward of the zero input) of each layer's output, as mean per-element norms."""
    no_bias = copy.deepcopy(model)
    with torch.no_grad():
        for m in no_bias.modules():
            if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
                m.bias.zero_()
    inp = magnitudes(no_bias, loader, layers, samples=samples)
    dev = next(model.parameters()).device
    x0 = next(iter(loader))[0][:1].to(dev)
    with _capture(model, layers) as feats, torch.no_grad():
        model.eval()(torch.zeros_like(x0))
        bias = [float(feats[n].double().flatten().norm() / feats[n].numel() ** 0.5)
                for n in layers]
    # with zero biases f_l(0) = 0, so magnitudes() measured ‖f_l^input(x)‖ directly
    return {"input_induced": inp["m"], "bias_induced": bias}


def is_linear_network(model: nn.Module) -> bool:
    allowed = (nn.Linear, nn.Flatten, nn.Sequential, nn.Identity, nn.Dropout)
    return all(isinstance(m, allowed) or m is model for m in model.modules())


def diagnose(models: Sequence[nn.Module], target: nn.Module, loader, *, input_shape,
             samples: int = 2048, labels: Sequence[str] | None = None, tap: str = "all"
             ) -> dict[str, Any]:
    """E_l = m_l(target) / mean_i m_l(models_i), with every model's m_l and logit norms, at
    the ``tap`` points of :func:`measured_layers`."""
    target._weightlab_input_shape = tuple(input_shape)  # type: ignore[attr-defined]
    layers = measured_layers(target, tap)
    base = [magnitudes(m, loader, layers, samples=samples) for m in models]
    tgt = magnitudes(target, loader, layers, samples=samples)
    ref = torch.tensor([b["m"] for b in base]).mean(0)
    ratio = (torch.tensor(tgt["m"]) / ref.clamp_min(1e-12)).tolist()
    L = len(layers)
    out = {"layers": layers, "tap": tap, "relative_depth": [i / max(L - 1, 1) for i in range(L)],
           "ratio": ratio, "target": tgt, "references": base,
           "labels": list(labels or [f"model_{i + 1}" for i in range(len(models))])}
    if is_linear_network(target):
        out["bias_split"] = {"target": bias_split(target, loader, layers, samples=samples),
                             "references": [bias_split(m, loader, layers, samples=samples)
                                            for m in models]}
    return out
