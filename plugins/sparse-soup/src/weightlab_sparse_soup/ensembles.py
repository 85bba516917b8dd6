"""The ensemble components: ``uniform`` and ``greedy`` soups and the ``ensemble`` baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from weightlab.components import Ensemble
from weightlab.params import param

_BN_RESET = param(True, "recompute BatchNorm statistics of the soup on calibration data")


class UniformSoup(Ensemble):
    """Uniform soup: θ = (1/m) Σ_i θ_i over ingredients that share an architecture and a mask;
    the mask is re-applied exactly and BatchNorm statistics are recomputed.

    Example::

        soup = registry.create("ensembles", "uniform")
        model = soup.combine(models, masks=[ck.masks for ck in ckpts], calibration=loader)
        soup.shared_mask  # the ingredients' common mask, kept exactly by the soup
    """

    name = "uniform"
    summary = "uniform model soup: the average of ingredients sharing one mask"

    @dataclass
    class Params:
        bn_reset: bool = _BN_RESET

    shared_mask: dict | None = None
    info: dict[str, Any] | None = None

    def combine(self, models: Sequence[Any], heldout=None, *, masks=None, calibration=None,
                names: Sequence[str] | None = None):
        from weightlab_sparse_soup.soups import uniform_soup

        model, self.shared_mask = uniform_soup(models, masks, calibration=calibration,
                                               bn_reset=self.params.bn_reset, names=names)
        self.info = {"chosen": list(range(1, len(models) + 1))}
        return model


class GreedySoup(Ensemble):
    """Greedy soup (Wortsman et al. 2022): ingredients sorted by held-out accuracy, each added
    only if the soup's held-out accuracy does not drop. ``heldout`` must come from the training
    set (``load_data(..., heldout=N)``, ``bundle.loader("heldout")``).

    Example::

        soup = registry.create("ensembles", "greedy")
        model = soup.combine(models, bundle.loader("heldout"), masks=masks, calibration=loader)
        soup.info["chosen"]  # 1-based indices of the ingredients in the soup
    """

    name = "greedy"
    summary = "greedy model soup: add ingredients while held-out accuracy does not drop"
    needs_data = True

    @dataclass
    class Params:
        bn_reset: bool = _BN_RESET

    shared_mask: dict | None = None
    info: dict[str, Any] | None = None

    def combine(self, models: Sequence[Any], heldout=None, *, masks=None, calibration=None,
                names: Sequence[str] | None = None):
        from weightlab_sparse_soup.soups import greedy_soup

        model, self.shared_mask, self.info = greedy_soup(
            models, heldout, masks, calibration=calibration, bn_reset=self.params.bn_reset,
            names=names)
        return model


class LogitEnsemble(Ensemble):
    """Prediction ensemble: averages the members' logits (m forward passes per input). The
    baseline soups are compared with; it is a module to evaluate, never saved as one
    checkpoint.

    Example::

        ens = registry.create("ensembles", "ensemble").combine(models)
        evaluate(ens, bundle.loader("test"))
    """

    name = "ensemble"
    summary = "logit-averaging ensemble of the ingredients (baseline, not saveable)"
    saveable = False

    @dataclass
    class Params:
        average: str = param("logits", "average the logits, or the softmax probabilities",
                             choices=("logits", "probs"))

    def combine(self, models: Sequence[Any], heldout=None, *, masks=None, calibration=None,
                names: Sequence[str] | None = None):
        from weightlab_sparse_soup.soups import LogitAverage, check_architectures

        check_architectures([m.state_dict() for m in models], names)
        return LogitAverage(models, self.params.average).eval()


ENSEMBLES = [UniformSoup, GreedySoup, LogitEnsemble]
