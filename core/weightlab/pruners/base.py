"""What score-based pruners share: which parameters they prune (``SelectParams``) and the
score → mask step (:class:`ScorePruner`). Torch and :mod:`weightlab.pruning` load inside the
methods, so that a pruner class can be listed without them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from weightlab.components import Pruner
from weightlab.params import param

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from weightlab.pruning import Analysis

SELECTIONS = ("joint", "per_layer")
_NM = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


def parse_nm(text: str) -> tuple[int, int] | None:
    """(N, M) for ``N:M`` — N of every M consecutive input weights of a row are zero
    (SparseGPT's ``prunen:prunem``: 2:4 keeps 2 of every 4; the sparsity is N/M); None for
    text of another form. ValueError, naming the value, unless 0 < N < M. The one spelling of
    N:M: the ``obs`` pruner's ``pattern`` and ``weightlab compare --sparsities`` read it."""
    m = _NM.fullmatch(text)
    if m is None:
        return None
    n, size = int(m.group(1)), int(m.group(2))
    if not 0 < n < size:
        raise ValueError(f"{text!r}: expected N:M with 0 < N < M (N of every M consecutive "
                         f"inputs zero), e.g. '2:4'")
    return n, size


@dataclass
class SelectParams:
    modules: list[str] = param([], "glob patterns of parameter names to prune (default: every "
                                   "conv and linear weight, attention's in_proj_weight "
                                   "included; biases and norms never)")
    exclude: list[str] = param([], "glob patterns of parameter names to leave dense")
    skip_first: bool = param(False, "leave the first conv/linear layer dense")
    skip_last: bool = param(False, "leave the last conv/linear layer (the head) dense")


class ScorePruner(Pruner):
    """Removes the lowest-scoring weights: ``scores`` gives one score per weight; ``selection``
    is ``joint`` (one threshold over all chosen layers) or ``per_layer``.

    The scores do not depend on the sparsity, so ``analyze`` returns them (a
    :class:`weightlab.pruning.Analysis`) and a sweep scores once. Subclasses with more than
    scores override ``statistics`` (what ``analyze`` computes) and ``prune_with`` (the
    sparsity-dependent rest).

    Example (a pruner of one's own)::

        class AbsGrad(ScorePruner):
            name, summary, Params = "abs_w", "remove the smallest |w|", SelectParams

            def scores(self, model, names, masks, data=None):
                params = dict(model.named_parameters())
                return {n: params[n].detach().abs() for n in names}
    """

    selection: ClassVar[str] = "joint"

    def chosen(self, model: nn.Module) -> list[str]:
        from weightlab import pruning

        p = self.params
        # scores need no module: attention's packed Q/K/V projection is pruned like a linear
        return pruning.prunable_names(model, p.modules, p.exclude, p.skip_first, p.skip_last,
                                      attention=True)

    def scores(self, model: nn.Module, names: list[str], masks: dict[str, torch.Tensor],
               data=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def prepare(self, model: nn.Module, masks: dict[str, torch.Tensor]
                ) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The chosen names and their full masks, applied to ``model`` (removed weights = 0)."""
        from weightlab import pruning
        from weightlab.checkpoint import apply_masks

        names = self.chosen(model)
        old = pruning.full_masks(model, names, masks)
        apply_masks(model, old)
        return names, old

    def statistics(self, model: nn.Module, names: list[str], old: dict[str, torch.Tensor],
                   data=None) -> dict[str, Any]:
        import torch

        with torch.no_grad():
            return {"scores": self.scores(model, names, old, data)}

    def analyze(self, model, masks, data=None):
        from weightlab import pruning

        names, old = self.prepare(model, masks)
        return pruning.Analysis.of(self, model, names, old,
                                   self.statistics(model, names, old, data))

    def prune(self, model, sparsity, masks, data=None, analysis=None):
        from weightlab import pruning
        from weightlab.errors import WeightlabError

        pruning.target_zeros(sparsity, 1)  # validates the range
        names, old = self.prepare(model, masks)
        if analysis is None:
            return self.prune_with(model, sparsity, names, old,
                                   self.statistics(model, names, old, data), data=data)
        if not isinstance(analysis, pruning.Analysis):
            raise WeightlabError(f"{self.name}: analysis must be what {self.name}.analyze "
                                 f"returned, got {type(analysis).__name__}")
        analysis.check(self, model, names, old)
        return self.prune_with(model, sparsity, names, old, analysis.stats, analysis, data=data)

    def prune_with(self, model: nn.Module, sparsity: float, names: list[str],
                   old: dict[str, torch.Tensor], stats: dict[str, Any],
                   analysis: Analysis | None = None, data=None
                   ) -> dict[str, torch.Tensor]:
        """The sparsity-dependent part, from ``stats`` (``analysis``: where they came from,
        None when computed for this call; ``data``: the calibration data, for a pruner that
        must pass over it again). Must not modify ``stats``: a sweep reuses them."""
        from weightlab import pruning
        from weightlab.checkpoint import apply_masks

        selection = getattr(self.params, "selection", self.selection)
        new = pruning.masks_from_scores(stats["scores"], sparsity, old, selection)
        apply_masks(model, new)
        return new


def split_flat(flat: torch.Tensor, names: list[str], params: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    """A flat concatenation of the parameters ``names`` back to one tensor per parameter."""
    out, i = {}, 0
    for n in names:
        k = params[n].numel()
        out[n] = flat[i:i + k].view(params[n].shape)
        i += k
    return out
