"""Weight interpolation between aligned models and the barriers (Frankle et al. 2020,
linear mode connectivity; Qu & Horváth 2024, the Vanishing Feature paper).

θ(α) = (1 − α)·θ_A + α·align(θ_B);  loss barrier = max_α L(α) − ½(L(0) + L(1));
accuracy barrier = ½(A(0) + A(1)) − min_α A(α).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def average_states(states: Sequence[dict[str, torch.Tensor]],
                   weights: Sequence[float] | None = None, *,
                   accumulate: torch.dtype | None = torch.float64) -> dict[str, torch.Tensor]:
    """θ = Σ_i w_i θ_i (w_i = 1/m by default) over floating tensors; integer buffers
    (BatchNorm's num_batches_tracked) come from the first state. One fused multiply-add per
    model over all tensors at once (``torch._foreach_*``).

    Accumulated in float64 by default (then cast back to each tensor's dtype): the weighted
    mean of float32 models is then correctly rounded, so a merge or soup does not depend on
    the order of its inputs and equals the same average computed elsewhere bit for bit; it
    costs one float64 copy of the model. ``accumulate=torch.float32`` halves that for very
    large models (half/bfloat16 inputs are then still widened to float32)."""
    m = len(states)
    w = [1.0 / m] * m if weights is None else [float(x) for x in weights]
    keys = [k for k, t in states[0].items() if t.is_floating_point()]
    dtypes = [states[0][k].dtype for k in keys]
    wide = [torch.promote_types(dt, accumulate or torch.float32) for dt in dtypes]
    acc = torch._foreach_mul([states[0][k].to(dt) for k, dt in zip(keys, wide)], w[0])
    for st, wi in zip(states[1:], w[1:]):
        torch._foreach_add_(acc, [st[k].to(a.device, dt) for k, a, dt in zip(keys, acc, wide)],
                            alpha=wi)
    out = {k: t.clone() for k, t in states[0].items() if not t.is_floating_point()}
    out.update((k, a.to(dt)) for k, a, dt in zip(keys, acc, dtypes))
    return {k: out[k] for k in states[0]}


def with_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    return net


def aligned_copy(model: nn.Module, alignment: Any, graph: Any) -> nn.Module:
    """``model`` expressed in the reference's channel order (same function)."""
    if alignment is None:
        return model
    return with_state(model, alignment.apply(graph, model.state_dict()))


def aligned_pair(model_a: nn.Module, model_b: nn.Module, alignment: Any, graph: Any,
                 weights: Sequence[float] = (0.5, 0.5)) -> list[nn.Module]:
    """Both endpoints in one channel order: A and B aligned to A, or, for a joint merge (an
    alignment with ``express(graph, models, weights)``, e.g. the zipit plugin's ZipIt!/CCA),
    both models expressed in the merged space for a merge with ``weights``, whose
    ``weights``-average is the jointly merged model."""
    if alignment is not None and alignment.joint:
        return [with_state(m, s) for m, s in
                zip((model_a, model_b),
                    alignment.express(graph, [model_a, model_b], list(weights)))]
    return [model_a, aligned_copy(model_b, alignment, graph)]


def barriers(losses: Sequence[float], accs: Sequence[float],
             alphas: Sequence[float] | None = None) -> dict[str, float]:
    """Two definitions, both kept (accuracy as a fraction, 0–1; loss in nats):

    - the seed code's (``source/utils/calculate_barrier.py``; Frankle et al. 2020):
      ``loss_barrier`` = max_α L(α) − ½(L(0) + L(1)), ``acc_barrier`` = ½(A(0) + A(1)) −
      min_α A(α);
    - Git Re-Basin's (Ainsworth et al. 2023, Def. 2.1): the largest gap from the straight
      line between the endpoints, ``loss_barrier_line`` = max_α [L(α) − ((1−α)L(0) + αL(1))],
      ``acc_barrier_line`` = max_α [((1−α)A(0) + αA(1)) − A(α)].

    They agree when the endpoints are equal; with unequal endpoints the seed's compares with
    their mean wherever the worst point lies."""
    n = len(losses)
    al = list(alphas) if alphas is not None else [i / (n - 1) for i in range(n)]
    line = [max(lv - ((1 - a) * losses[0] + a * losses[-1]) for lv, a in zip(losses, al)),
            max(((1 - a) * accs[0] + a * accs[-1]) - av for av, a in zip(accs, al))]
    return {"loss_barrier": max(losses) - 0.5 * (losses[0] + losses[-1]),
            "acc_barrier": 0.5 * (accs[0] + accs[-1]) - min(accs),
            "loss_barrier_line": line[0], "acc_barrier_line": line[1]}


def curve(model_a: nn.Module, model_b: nn.Module, loaders: dict[str, Any],
          alphas: Sequence[float], *, alignment: Any = None, graph: Any = None,
          normalizer: Any = None, calibration: Any = None,
          normalize_endpoints: bool = True) -> dict[str, Any]:
    """Loss and top-1 (a fraction, 0–1) along the path on every loader (e.g. {"train": …,
    "test": …}), with :func:`barriers`.

    With a normalizer, each interpolated model is corrected against the two endpoints with
    weights (1 − α, α) before it is evaluated — at every α, endpoints included, for a
    consistent curve (``normalize_endpoints=True``), or, as the seed code does, only strictly
    between them, the endpoints evaluated as they are (``False``). The result says which
    (``endpoints_normalized``)."""
    from weightlab.metrics import evaluate

    joint = alignment is not None and alignment.joint
    a_, b = aligned_pair(model_a, model_b, alignment, graph)
    sa, sb = a_.state_dict(), b.state_dict()
    out: dict[str, Any] = {"alpha": [float(a) for a in alphas]}
    for split in loaders:
        out[split] = {"loss": [], "top1": []}
    for a in alphas:
        if joint:  # a joint merge's expression depends on the weights (zipit's joint.py)
            a_, b = aligned_pair(model_a, model_b, alignment, graph, (1 - a, a))
            sa, sb = a_.state_dict(), b.state_dict()
        net = with_state(model_a, average_states([sa, sb], [1 - a, a]))
        if normalizer is not None and (normalize_endpoints or 0.0 < a < 1.0):
            net = normalizer.apply(net, [a_, b], [1 - a, a], calibration, graph)
        for split, loader in loaders.items():
            m = evaluate(net, loader)
            out[split]["loss"].append(m["loss"])
            out[split]["top1"].append(m["top1"])
    for split in loaders:
        out[split].update(barriers(out[split]["loss"], out[split]["top1"], out["alpha"]))
    out["units"] = {"top1": "fraction (0–1)", "loss": "cross-entropy (nats)"}
    out["endpoints_normalized"] = normalizer is not None and normalize_endpoints
    return out
