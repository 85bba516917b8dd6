"""REPAIR and its two halves, RESCALE and RESHIFT (Jordan et al. 2023, "REPAIR: REnormalizing
Permuted Activations for Interpolation Repair", arXiv:2211.08403).

The steps follow the authors' notebook (KellerJordan/REPAIR, Train-Merge-REPAIR-VGG11):
collect the references' statistics, compute the targets, reset the target's statistics with
temporary per-channel normalizations in one cumulative train-mode pass, fuse them into the layers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from weightlab.components import Normalizer
from weightlab.errors import UsageError
from weightlab.lazy import no_grad
from weightlab.params import param

if TYPE_CHECKING:  # torch loads when a model is corrected, not when normalizers are listed
    import torch
    from torch import nn

    from weightlab_repair.stats import ChannelMoments

SAMPLES = param(4096, "calibration samples to use from the data", min=1)
PLACEMENT = param("all", "where to correct: all (every conv/linear, at the norm's output "
                         "when one follows) or seed (the VF code: a ResNet's block convs, VGG's "
                         "convs, before the norm)", choices=("all", "seed"))
EPS = param(1e-5, "ε in √(σ² + ε)", min=0.0, min_exclusive=True)


def check_references(who: str, references: Sequence[nn.Module], weights: Sequence[float]
                     ) -> list[float]:
    if not references:
        raise UsageError(f"{who}: needs at least one reference model")
    if len(weights) != len(references):
        raise UsageError(f"{who}: {len(weights)} weights for {len(references)} reference models; "
                         f"expected one weight per reference")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise UsageError(f"{who}: reference weights {list(weights)} sum to {sum(weights):g}; "
                         f"expected them to sum to 1")
    return [float(w) for w in weights]


def targets(moments: list[list[ChannelMoments]], weights: Sequence[float], eps: float
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """μ*_c = Σ_i w_i μ_i,c and σ*_c = Σ_i w_i σ_i,c (standard deviations interpolated, not
    variances). σ_i,c is taken as √(var_i,c + ε), the same ε-regularized std that measures the
    target below, so a model repaired towards itself is left unchanged; for var ≫ ε it is the
    paper's σ_i,c."""
    out = []
    for per_ref in zip(*moments):
        mu = sum(w * m.mean for w, m in zip(weights, per_ref))
        sd = sum(w * (m.var + eps).sqrt() for w, m in zip(weights, per_ref))
        out.append((mu, sd))
    return out


def correction(mode: str, goal_mu: torch.Tensor, goal_sd: torch.Tensor, mean: torch.Tensor,
               var: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (a, c) with z' = a·z + c:
    repair  z' = (z − μ)/√(σ² + ε)·σ* + μ*:  a = σ*/√(σ² + ε), c = μ* − a·μ;
    rescale z' = z/√(σ² + ε)·σ*:              a = σ*/√(σ² + ε), c = 0;
    reshift z' = z − μ + μ*:                  a = 1,            c = μ* − μ."""
    import torch

    if mode == "reshift":
        return torch.ones_like(mean), goal_mu - mean
    a = goal_sd / (var + eps).sqrt()
    return a, (goal_mu - a * mean if mode == "repair" else torch.zeros_like(mean))


def _reset_hook(mode: str, goal_mu: torch.Tensor, goal_sd: torch.Tensor, eps: float,
                moments: ChannelMoments):
    """A temporary per-channel normalization in train mode (the notebook's ResetLayer: a
    BatchNorm with affine weight σ*, bias μ*, momentum None): it accumulates the running
    statistics of what arrives and passes on the feature corrected with this batch's own
    statistics, so the layers downstream already see a corrected upstream."""
    from weightlab_repair.stats import broadcast

    def hook(module, inputs, out):
        z = out[0] if isinstance(out, tuple) else out  # attention returns (output, weights)
        a, c = correction(mode, goal_mu, goal_sd, *moments.add(z), eps)
        d = moments.dim
        z = z * broadcast(a.to(z.dtype), z, d) + broadcast(c.to(z.dtype), z, d)
        return (z, *out[1:]) if isinstance(out, tuple) else z

    return hook


@no_grad
def renormalize(model: nn.Module, references: Sequence[nn.Module], weights: Sequence[float],
                data, *, mode: str, samples: int, eps: float, placement: str = "all"
                ) -> nn.Module:
    """A corrected deep copy of ``model`` (``model`` and the references are not modified).

    The places :func:`~weightlab_repair.places.select_places` picks for ``placement`` are
    corrected at their point (``all``: the following per-channel-affine norm's output if any,
    else the layer's output; ``seed``: the conv's own output)."""
    from weightlab_repair.places import (
        find_places,
        fold,
        needs_bias,
        same_places,
        select_places,
    )
    from weightlab_repair.stats import (
        ChannelMoments,
        calibration_batches,
        evaluating,
        first_batch,
        reference_moments,
    )

    who = mode
    weights = check_references(who, references, weights)
    target = copy.deepcopy(model)
    example = first_batch(data, samples, target, who)[:2]
    places = select_places(find_places(target, example), placement)
    if mode != "rescale":
        missing = [p.name for p in places if needs_bias(p)]
        if missing and (placement != "all" or len(missing) == len(places)):
            raise UsageError(f"{who}: layer {missing[0]!r} has no bias to take the mean shift "
                             f"(and no norm after it); use the 'rescale' normalizer instead")
        places = [p for p in places if not needs_bias(p)]  # all: bias-free shortcuts stay
    ref_places = [same_places(places, ref, f"reference model {i + 1}")
                  for i, ref in enumerate(references)]
    moments = reference_moments(references, ref_places,
                                calibration_batches(data, samples, target, who))
    goals = targets(moments, weights, eps)

    measured = [ChannelMoments(p.channel_dim) for p in places]
    handles = [p.point.register_forward_hook(_reset_hook(mode, mu, sd, eps, m))
               for p, (mu, sd), m in zip(places, goals, measured)]
    try:  # the model's own norms stay in eval mode: their running statistics are part of it
        with evaluating(target):
            for x in calibration_batches(data, samples, target, who):
                target(x)
    finally:
        for h in handles:
            h.remove()
    # fuse: the temporary normalizations, evaluated with their running statistics, fold into
    # the places (reshift needs no scale, rescale no shift)
    for p, (mu, sd), m in zip(places, goals, measured):
        a, c = correction(mode, mu, sd, m.mean, m.var, eps)
        fold(p, None if mode == "reshift" else a, None if mode == "rescale" else c)
    return target


class _Renormalizer(Normalizer):
    mode = ""
    needs_data = True

    def apply(self, model, references, weights, data, graph=None):
        # ``graph`` is not needed: the places come from a hooked forward pass of ``model``.
        return renormalize(model, references, weights, data, mode=self.mode,
                           samples=self.params.samples, eps=getattr(self.params, "eps", 1e-5),
                           placement=getattr(self.params, "placement", "all"))


class Repair(_Renormalizer):
    """REPAIR (Jordan et al. 2023): make each channel's mean and standard deviation those the
    reference models have at the same place, interpolated with the merge weights:

        μ*_c = Σ_i w_i μ_i,c,   σ*_c = Σ_i w_i σ_i,c,   z' = (z − μ_c)/√(σ_c² + ε)·σ*_c + μ*_c

    for every conv/linear layer but the logits layer. Where a BatchNorm/LayerNorm/GroupNorm
    follows the layer, z is that norm's output and the correction folds into its affine
    weight/bias (for BatchNorm models this is what REPAIR does); otherwise it folds into the
    layer's weight and bias (a bias-free layer is an error: use ``rescale``). The statistics of
    all references come from one pass; the target's are measured in one cumulative train-mode
    pass through temporary normalizations, as in the authors' notebook. Returns a deep copy.

    Example::

        repaired = Repair(samples=4096).apply(merged, [model_a, model_b], [0.5, 0.5], loader)
    """

    name = "repair"
    summary = "REPAIR: reset each channel's mean and std to the references' interpolated ones"
    mode = "repair"

    @dataclass
    class Params:
        samples: int = SAMPLES
        eps: float = EPS
        placement: str = PLACEMENT


class Rescale(_Renormalizer):
    """RESCALE (the scale half of REPAIR, Jordan et al. 2023; used after pruning by Qu &
    Horváth 2024, "Vanishing Feature"): z' = z/√(σ_c² + ε)·σ*_c with σ*_c = Σ_i w_i σ_i,c.
    No shift, so it works on bias-free models. Returns a deep copy."""

    name = "rescale"
    summary = "RESCALE: scale each channel to the references' interpolated std (no shift)"
    mode = "rescale"

    @dataclass
    class Params:
        samples: int = SAMPLES
        eps: float = EPS
        placement: str = PLACEMENT


class Reshift(_Renormalizer):
    """RESHIFT (the shift half of REPAIR, Jordan et al. 2023): z' = z − μ_c + μ*_c with
    μ*_c = Σ_i w_i μ_i,c. Needs a bias (or a norm) at each corrected place. Returns a deep
    copy."""

    name = "reshift"
    summary = "RESHIFT: move each channel's mean to the references' interpolated mean"
    mode = "reshift"

    @dataclass
    class Params:
        samples: int = SAMPLES
        placement: str = PLACEMENT
