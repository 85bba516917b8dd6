"""Weight averaging of sparse models that share one mask (model soups, Wortsman et al. 2022;
Sparse Model Soups, Zimmer et al. 2024) and the logit-averaging ensemble they are compared with.

Uniform soup: θ_soup = (1/m) Σ_i θ_i. Greedy soup: ingredients sorted by held-out accuracy, each
added only if the held-out accuracy of the running soup does not drop. Before averaging every
ingredient must have the same state-dict keys and shapes and exactly the same mask; after it the
shared mask is re-applied and BatchNorm statistics are recomputed (cumulative pass, momentum None).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from weightlab.batchnorm import has_batchnorm, reset_bn
from weightlab.checkpoint import apply_masks
from weightlab.errors import IncompatibleModelsError, UsageError
from weightlab.interpolation import average_states
from weightlab.merging import check_compatible

Masks = dict[str, torch.Tensor]


def _label(names: Sequence[str] | None, i: int) -> str:
    return f"ingredient {i + 1}" + (f" ({names[i]})" if names else "")


def check_architectures(states: Sequence[dict[str, torch.Tensor]],
                        names: Sequence[str] | None = None) -> None:
    """Every state dict has the reference's keys, in the same shapes; else one line naming the
    first differing tensor (core's check, with the ingredients named)."""
    check_compatible(states, [_label(names, i) for i in range(len(states))])


def check_masks(masks: Sequence[Masks], names: Sequence[str] | None = None) -> Masks:
    """All ingredients carry exactly the same mask; returns it. A mismatch is one line naming
    the first differing layer and how many entries differ."""
    ref = masks[0]
    for i, mk in enumerate(masks[1:], start=1):
        for key in list(ref) + [k for k in mk if k not in ref]:
            if key not in mk or key not in ref:
                has, lacks = (0, i) if key in ref else (i, 0)
                raise IncompatibleModelsError(
                    f"masks differ at layer {key!r}: {_label(names, has)} is masked there, "
                    f"{_label(names, lacks)} is not (ingredients must share one mask)")
            a, b = ref[key].bool(), mk[key].to(ref[key].device).bool()
            if a.shape != b.shape or not torch.equal(a, b):
                n = int((a != b).sum()) if a.shape == b.shape else -1
                what = f"{n} entries differ" if n >= 0 else f"shape {tuple(b.shape)} vs " \
                                                            f"{tuple(a.shape)}"
                raise IncompatibleModelsError(
                    f"masks differ at layer {key!r}: {_label(names, i)} vs {_label(names, 0)} "
                    f"({what}; ingredients must share one mask)")
    return {k: v.bool() for k, v in ref.items()}


def uniform_soup(models: Sequence[nn.Module], masks: Sequence[Masks] | None = None, *,
                 calibration=None, bn_reset: bool = True, weights: Sequence[float] | None = None,
                 names: Sequence[str] | None = None) -> tuple[nn.Module, Masks]:
    """The average of ``models`` as a new model of the same architecture, with the shared mask
    re-applied (exactly) and BatchNorm statistics recomputed on ``calibration``."""
    if not models:
        raise UsageError("a soup needs at least one ingredient")
    states = [m.state_dict() for m in models]
    check_architectures(states, names)
    shared = check_masks(masks, names) if masks else {}
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(average_states(states, weights))
    apply_masks(soup, shared)
    if bn_reset and has_batchnorm(soup):
        if calibration is None:
            raise UsageError("the ingredients have BatchNorm: their soup needs calibration data "
                             "to recompute its statistics (pass --data)")
        reset_bn(soup, calibration)
    return soup.eval(), shared


def greedy_soup(models: Sequence[nn.Module], heldout, masks: Sequence[Masks] | None = None, *,
                calibration=None, bn_reset: bool = True, names: Sequence[str] | None = None
                ) -> tuple[nn.Module, Masks, dict]:
    """Greedy soup (Wortsman et al. 2022, Alg. 1): sort by held-out accuracy; start from the best
    ingredient; add the next one when the soup's held-out accuracy does not drop. The held-out
    loader comes from the training set — the test set never chooses anything."""
    from weightlab.metrics import evaluate

    if heldout is None:
        raise UsageError("a greedy soup needs held-out data from the training set "
                         "(--heldout N > 0)")
    states = [m.state_dict() for m in models]
    check_architectures(states, names)
    shared = check_masks(masks, names) if masks else {}
    if bn_reset and has_batchnorm(models[0]):
        if calibration is None:
            raise UsageError("the ingredients have BatchNorm: a greedy soup needs calibration "
                             "data to recompute statistics (pass --data)")
        # compare like with like: every candidate soup gets recomputed statistics, so the
        # single ingredients are scored with recomputed statistics too
        singles = [reset_bn(copy.deepcopy(m), calibration) for m in models]
    else:
        singles = [copy.deepcopy(m) for m in models]
    scores = [evaluate(m, heldout)["top1"] for m in singles]
    order = sorted(range(len(models)), key=lambda i: (-scores[i], i))
    chosen = [order[0]]
    best = singles[order[0]].eval()
    best_score = scores[order[0]]
    trace = [{"ingredient": order[0] + 1, "heldout_top1": best_score, "added": True}]
    for i in order[1:]:
        cand, _ = uniform_soup([models[j] for j in chosen + [i]],
                               [masks[j] for j in chosen + [i]] if masks else None,
                               calibration=calibration, bn_reset=bn_reset)
        score = evaluate(cand, heldout)["top1"]
        added = score >= best_score
        trace.append({"ingredient": i + 1, "heldout_top1": score, "added": added})
        if added:
            chosen.append(i)
            best, best_score = cand, score
    info = {"heldout_top1": scores, "order": [i + 1 for i in order],
            "chosen": sorted(i + 1 for i in chosen), "soup_heldout_top1": best_score,
            "trace": trace}
    return best, shared, info


class LogitAverage(nn.Module):
    """The prediction ensemble: mean of the members' logits (or log of the mean softmax). It
    runs every member, so it costs m forward passes; a baseline, never saved as a checkpoint."""

    saveable = False

    def __init__(self, models: Sequence[nn.Module], average: str = "logits"):
        super().__init__()
        self.members = nn.ModuleList(models)
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits_mbk = torch.stack([m(x) for m in self.members])
        if self.average == "probs":  # log p̄ with p̄ = (1/m) Σ softmax(z_i)
            return torch.logsumexp(logits_mbk.log_softmax(-1), 0) - torch.log(
                torch.tensor(float(len(self.members)), device=x.device))
        return logits_mbk.mean(0)
