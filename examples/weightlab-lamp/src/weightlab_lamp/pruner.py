"""The LAMP pruner (Lee et al. 2021, "Layer-adaptive sparsity for the magnitude-based
pruning", ICLR)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from weightlab.components import Pruner
from weightlab.params import param

if TYPE_CHECKING:  # torch loads in the functions: listing and `weightlab show` stay fast
    import torch
    from torch import nn


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score of every weight of one layer, in the weight's shape.

    With the layer's weights sorted so that |w_1| ≤ |w_2| ≤ … ≤ |w_n| (Lee et al. 2021, eq. 2):

        score(u) = w_u² / Σ_{v ≥ u} w_v²

    the squared weight over the squared mass of itself and every larger weight. The largest
    weight of a layer scores 1, so no layer is ever emptied. Ties keep index order (a stable
    sort) so that the scores are deterministic.
    """
    import torch

    sq = weight.detach().flatten().double().pow(2)
    sorted_sq, order = torch.sort(sq, stable=True)
    # Σ_{v ≥ u}: suffix sums of the ascending squares
    suffix = sorted_sq.flip(0).cumsum(0).flip(0)
    scores_sorted = torch.where(suffix > 0, sorted_sq / suffix.clamp_min(1e-300),
                                torch.zeros_like(sorted_sq))
    scores = torch.empty_like(scores_sorted)
    scores[order] = scores_sorted
    return scores.view_as(weight)


class LampPruner(Pruner):
    """LAMP: layer-adaptive magnitude pruning (Lee et al. 2021, ICLR).

    Every conv and linear weight gets the score w_u² / Σ_{v ≥ u} w_v² within its layer (weights
    sorted ascending by magnitude), then one global threshold removes the lowest scores:
    exactly round(sparsity · n) weights over all pruned layers. The rescaling makes scores
    comparable across layers, so the per-layer sparsities follow from the weights instead of
    a hand-set schedule; weights already masked score 0 and stay removed.

    Example::

        pruner = registry.create("pruners", "lamp")
        masks = pruner.prune(net, 0.9, masks={})   # name → bool tensor, True = kept

    or ``weightlab prune model.safetensors --pruner lamp --sparsity 0.9``.
    """

    name = "lamp"
    summary = "LAMP: magnitude rescaled by the layer's remaining mass, one global threshold"
    needs_data = False

    @dataclass
    class Params:
        skip_first: bool = param(False, "leave the first conv/linear layer dense")
        skip_last: bool = param(False, "leave the last layer (the classifier head) dense")

    def scores(self, model: nn.Module, names: list[str], masks: dict[str, torch.Tensor],
               data=None) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        # masked weights are zero already (apply_masks ran): they score 0
        return {n: lamp_scores(params[n]) for n in names}

    def prune(self, model, sparsity, masks, data=None):
        import torch
        from weightlab import pruning
        from weightlab.checkpoint import apply_masks

        p = self.params
        names = pruning.prunable_names(model, skip_first=p.skip_first, skip_last=p.skip_last)
        old = pruning.full_masks(model, names, masks)
        apply_masks(model, old)
        with torch.no_grad():
            scores = self.scores(model, names, old, data)
        new = pruning.masks_from_scores(scores, sparsity, old, "joint")
        apply_masks(model, new)
        return new
