"""Data-free pruners: magnitude (per layer), global magnitude, random."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.params import param
from weightlab.pruners.base import SELECTIONS, ScorePruner, SelectParams


class MagnitudePruner(ScorePruner):
    """Layer-wise magnitude pruning (Han et al. 2015, "Learning both Weights and Connections"):
    score |w_q|; every chosen layer loses its ``round(s · n_layer)`` smallest weights, so each
    layer sits at the target sparsity. Ties go by index order (exact, deterministic counts).

    Example::

        masks = registry.create("pruners", "magnitude").prune(net, 0.9, masks={})
    """

    name = "magnitude"
    summary = "remove the smallest |w| in each layer (one threshold per layer)"
    selection = "per_layer"
    Params = SelectParams

    def scores(self, model, names, masks, data=None):
        params = dict(model.named_parameters())
        return {n: params[n].detach().abs() for n in names}


class GlobalMagnitudePruner(MagnitudePruner):
    """Global magnitude pruning (Han et al. 2015; the IMP baseline of Sparse Model Soups):
    score |w_q| with one threshold over all chosen layers, so ``round(s · n_total)`` weights go
    in all and layers end at different sparsities."""

    name = "global_magnitude"
    summary = "remove the smallest |w| over all chosen layers (one global threshold)"
    selection = "joint"


@dataclass
class RandomParams(SelectParams):
    seed: int = param(0, "random seed")
    selection: str = param("per_layer", "each layer at the target, or one draw over all layers",
                           choices=SELECTIONS)


class RandomPruner(ScorePruner):
    """Random pruning (the baseline every pruning paper reports): scores u_q ~ U(0, 1) from a
    seeded CPU generator (same masks on every device), lowest removed."""

    name = "random"
    summary = "remove seeded uniformly random weights"
    Params = RandomParams

    def scores(self, model, names, masks, data=None):
        import torch

        gen = torch.Generator().manual_seed(self.params.seed)
        params = dict(model.named_parameters())
        return {n: torch.rand(params[n].shape, generator=gen).to(params[n].device) for n in names}
