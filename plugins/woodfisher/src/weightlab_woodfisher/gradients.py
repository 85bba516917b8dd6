"""Per-sample gradients of the cross-entropy loss with the true labels (the empirical Fisher
WoodFisher uses), computed in batches with ``torch.func`` (``vmap(grad(functional_call))``) —
never one backward pass per sample — and streamed in chunks so that N × P never has to fit.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from weightlab.errors import UsageError


def require_data(pruner_name: str, data) -> None:
    if data is None:
        raise UsageError(f"pruner {pruner_name!r} needs calibration data: pass --data NAME "
                         f"(and --data-dir) or a loader")


def activation_bytes(model: nn.Module, data) -> int:
    """Bytes of every module output for one sample (forward hooks on a one-sample probe): what
    backward keeps alive per sample, the part of a chunk's memory that is not the gradient."""
    x, _ = next(iter(data))
    dev = next(model.parameters()).device
    x = x[:1].to(dev, next(model.parameters()).dtype)
    total = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]


def per_sample_grads(model: nn.Module, names: list[str], data, samples: int, chunk: int,
                     masks: dict[str, torch.Tensor] | None = None,
                     dtype: torch.dtype | None = None,
                     fingerprint: torch.Tensor | None = None) -> Iterator[list[torch.Tensor]]:
    """Yield chunks of per-sample gradients g_n = ∇_w CE(f(x_n; w), y_n), one (c, numel)
    tensor per parameter of ``names`` (any subset of the parameters: the others are held
    fixed, and backward stops at the earliest of ``names``), at most ``samples`` rows in all.
    Masked-out coordinates get a zero gradient: pruned weights are fixed at 0, so the Fisher
    restricted to the free weights is the one with their rows and columns zeroed. The model
    runs in eval mode (BatchNorm uses its running statistics).

    ``fingerprint`` (a float64 (3,) tensor on the device) accumulates Σx, Σ_n n·Σx_n and Σy
    of the samples used, so that two passes can be checked to have seen the same data."""
    from torch.func import functional_call, grad, vmap

    params = dict(model.named_parameters())
    chosen = {n: params[n].detach() for n in names}
    fixed = {n: p.detach() for n, p in params.items() if n not in chosen}
    fixed.update(dict(model.named_buffers()))
    flat_masks = [None if masks is None or n not in masks or bool(masks[n].all())
                  else masks[n].flatten() for n in names]
    p_dtype = chosen[names[0]].dtype
    dev = chosen[names[0]].device

    def loss(p, x, y):
        out = functional_call(model, {**fixed, **p}, (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    grads_fn = vmap(grad(loss), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for x, y in data:
            if seen >= samples:
                break
            x, y = x[: samples - seen].to(dev, p_dtype), y[: samples - seen].to(dev)
            if fingerprint is not None:
                per_x = x.detach().double().flatten(1).sum(1)
                rank = torch.arange(seen + 1, seen + 1 + len(y), device=dev, dtype=torch.float64)
                fingerprint += torch.stack([per_x.sum(), (rank * per_x).sum(),
                                            y.double().sum()]).to(fingerprint.device)
            for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True):
                g = grads_fn(chosen, xs, ys)
                yield [(g[n].flatten(1) if m is None else g[n].flatten(1) * m).to(dtype or p_dtype)
                       for n, m in zip(names, flat_masks, strict=True)]
                del g
                seen += len(ys)
    finally:
        model.train(was_training)


def stack_grads(model: nn.Module, names: list[str], data, samples: int, chunk: int = 64,
                masks=None, dtype=None) -> torch.Tensor:
    """All N × P per-sample gradients at once (tests and the benchmark's reference)."""
    return torch.cat([torch.cat(parts, 1) for parts in
                      per_sample_grads(model, names, data, samples, chunk, masks, dtype)])
