"""Unstructured pruning, the parts every pruner and command shares.

- :func:`prunable_names`: which parameters are pruned (conv/linear weights, attention's input
  projections for score pruners, glob-filtered).
- :func:`masks_from_scores`: keep the highest scores, exactly ``round(s·n)`` zeros, ties broken
  by index order; weights already masked stay pruned and count towards the target.
- :func:`one_shot` / :func:`sweep`: prune → evaluate → re-normalize (dense model as the
  reference) → re-apply masks → evaluate; :func:`plot_sweep` draws the accuracy curve.
- :class:`Analysis`: a pruner's sparsity-independent statistics (``Pruner.analyze``) with a
  checksum of the model state and masks they came from; a sweep computes them once.

Masks map a parameter name to a bool tensor of its shape, True = kept.
"""

from __future__ import annotations

import copy
import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from weightlab.checkpoint import apply_masks, sparsity_report
from weightlab.errors import UsageError, WeightlabError
from weightlab.pruners.base import SELECTIONS

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def attention_input_weights(m: nn.Module, prefix: str) -> list[str]:
    """The input-projection weights of an ``nn.MultiheadAttention``: bare parameters, not
    Linear modules — the packed ``in_proj_weight`` (rows Q, K, V), or ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight`` when the key/value sizes differ."""
    if m._qkv_same_embed_dim:
        return [f"{prefix}in_proj_weight"]
    return [f"{prefix}{x}_proj_weight" for x in ("q", "k", "v")]


def prunable_names(model: nn.Module, modules: Sequence[str] = (), exclude: Sequence[str] = (),
                   skip_first: bool = False, skip_last: bool = False,
                   attention: bool = False) -> list[str]:
    """``*.weight`` of every conv and linear module in definition order (biases and norms
    never), minus the first/last when asked, kept only if it matches a ``modules`` glob (when
    any is given) and no ``exclude`` glob. With ``attention``, ``nn.MultiheadAttention``'s input
    projections (:func:`attention_input_weights`, one packed 3E × E weight like timm's fused
    ``qkv`` linear) count as well, at the attention's place in that order (its ``out_proj`` is a
    Linear and always counts). Every built-in pruner and the woodfisher and obs plugins pass
    ``attention=True``; obs reads the projections' inputs from the attention's call."""
    names = []
    for n, m in model.named_modules():
        if attention and isinstance(m, nn.MultiheadAttention):
            names += attention_input_weights(m, f"{n}." if n else "")
        elif isinstance(m, PRUNABLE_TYPES) and getattr(m, "weight", None) is not None:
            names.append(f"{n}.weight")
    if skip_first:
        names = names[1:]
    if skip_last:
        names = names[:-1]
    for pattern in modules:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise UsageError(f"modules: pattern {pattern!r} matches no conv/linear weight; "
                             f"candidates: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}")
    if modules:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in modules)]
    names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not names:
        raise UsageError("no parameter left to prune (check the modules/exclude patterns)")
    return names


def full_masks(model: nn.Module, names: Sequence[str], masks: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    """The existing mask of each name (on the parameter's device), all-True where none."""
    params = dict(model.named_parameters())
    out = {}
    for n in names:
        p = params[n]
        m = masks.get(n)
        if m is not None and tuple(m.shape) != tuple(p.shape):
            raise WeightlabError(f"mask of {n}: shape {tuple(m.shape)} does not match the "
                                 f"parameter's {tuple(p.shape)}")
        out[n] = (m.to(p.device).bool() if m is not None
                  else torch.ones_like(p, dtype=torch.bool))
    return out


def target_zeros(sparsity: float, numel: int) -> int:
    """Exact number of zeros for a fraction: round(sparsity · numel)."""
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"sparsity {sparsity}: expected a fraction in [0, 1)")
    return int(round(sparsity * numel))


def _keep_highest(scores: torch.Tensor, old: torch.Tensor, zeros: int) -> torch.Tensor:
    """Bool keep-mask of flat ``scores``: the ``zeros`` lowest go, previously pruned ones first;
    a stable ascending sort breaks ties by index so the count is exact and deterministic."""
    if torch.isnan(scores).any():
        raise WeightlabError("pruning scores contain NaN (diverged model or bad data?)")
    scores = scores if scores.is_floating_point() else scores.float()
    s = torch.where(old, scores, torch.full_like(scores, -torch.inf))
    zeros = max(zeros, int((~old).sum()))
    order = torch.sort(s, stable=True).indices
    keep = torch.ones_like(old)
    keep[order[:zeros]] = False
    return keep


def masks_from_scores(scores: dict[str, torch.Tensor], sparsity: float,
                      masks: dict[str, torch.Tensor], selection: str = "joint"
                      ) -> dict[str, torch.Tensor]:
    """Masks with the lowest scores removed: one threshold over all layers (``joint``) or each
    layer at ``sparsity`` (``per_layer``). ``masks`` must hold an entry for every score."""
    if selection not in SELECTIONS:
        raise UsageError(f"selection {selection!r}: expected one of {', '.join(SELECTIONS)}")
    names = list(scores)
    if selection == "per_layer":
        return {n: _keep_highest(scores[n].flatten(), masks[n].flatten(),
                                 target_zeros(sparsity, scores[n].numel())
                                 ).view_as(masks[n]) for n in names}
    dev = scores[names[0]].device
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores.values()) \
        else torch.float32
    flat = torch.cat([scores[n].flatten().to(dev, dtype) for n in names])
    old = torch.cat([masks[n].flatten().to(dev) for n in names])
    keep = _keep_highest(flat, old, target_zeros(sparsity, flat.numel()))
    out, i = {}, 0
    for n in names:
        k = scores[n].numel()
        out[n] = keep[i:i + k].view_as(masks[n]).to(masks[n].device)
        i += k
    return out


def masked_nonzeros(model: nn.Module, masks: dict[str, torch.Tensor]) -> int:
    """How many masked-out weights are non-zero (a normalizer that un-pruned something)."""
    params = dict(model.named_parameters())
    return sum(int(((params[n] != 0) & ~m.to(params[n].device)).sum()) for n, m in masks.items())


# --------------------------------------------------------------------------------------------
# sparsity-independent statistics, computed once per sweep


def checksum(model: nn.Module, names: Sequence[str], masks: dict[str, torch.Tensor]
             ) -> torch.Tensor:
    """A cheap fingerprint of a model state and masks, (T, 3) float64 on the CPU: per floating
    parameter and buffer, then per mask of ``names``: Σx, Σx² and Σ r_i·x_i with
    r_i = 1 + (i mod 101) (the last one notices a permutation). One reduction per tensor on its
    device and one transfer."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    tensors += [masks[n] for n in names]
    rows = []
    for t in tensors:
        x = t.detach().flatten().double()
        ramp = torch.arange(x.numel(), device=x.device).remainder_(101).add_(1)
        rows.append(torch.stack([x.sum(), x.square().sum(), (x * ramp).sum()]))
    return torch.stack(rows).cpu() if rows else torch.zeros(0, 3, dtype=torch.float64)


@dataclass
class Analysis:
    """What a pruner's ``analyze`` returns: its sparsity-independent statistics (``stats``,
    pruner-specific) and what they were computed from — the pruner and its parameters, the
    pruned parameter names and shapes, a :func:`checksum` of the weights and masks.
    ``prune(..., analysis=a)`` calls :meth:`check` first, so an analysis of another model state
    (a fine-tuned copy, other masks, another block size) is refused, never silently used."""

    pruner: str
    params: dict[str, Any]
    names: list[str]
    shapes: list[tuple[int, ...]]
    fingerprint: torch.Tensor
    stats: dict[str, Any]

    @classmethod
    def of(cls, pruner: Any, model: nn.Module, names: Sequence[str],
           masks: dict[str, torch.Tensor], stats: dict[str, Any]) -> Analysis:
        params = dict(model.named_parameters())
        return cls(pruner.name, pruner.params_dict(), list(names),
                   [tuple(params[n].shape) for n in names], checksum(model, names, masks),
                   stats)

    def check(self, pruner: Any, model: nn.Module, names: Sequence[str],
              masks: dict[str, torch.Tensor]) -> None:
        """Raise a one-line WeightlabError unless ``model``/``masks`` are the state this
        analysis was computed from, by the same pruner with the same parameters."""
        who = pruner.name
        if (self.pruner, self.params) != (who, pruner.params_dict()):
            raise WeightlabError(f"{who}: the analysis was computed by {self.pruner} with "
                                 f"{self.params}, not by {who} with {pruner.params_dict()}")
        params = dict(model.named_parameters())
        shapes = [tuple(params[n].shape) for n in names]
        if (self.names, self.shapes) != (list(names), shapes):
            raise WeightlabError(f"{who}: the analysis was computed for parameters "
                                 f"{_brief(self.names, self.shapes)}, not "
                                 f"{_brief(list(names), shapes)}")
        now = checksum(model, names, masks)
        if now.shape != self.fingerprint.shape or not torch.allclose(
                now, self.fingerprint, rtol=1e-9, atol=1e-12):
            raise WeightlabError(f"{who}: the model's weights or masks differ from those the "
                                 f"analysis was computed from (checksum mismatch); analyze the "
                                 f"model you prune")


def _brief(names: list[str], shapes: list[tuple[int, ...]]) -> str:
    items = [f"{n}{list(s)}" for n, s in zip(names, shapes, strict=True)]
    return ", ".join(items[:3]) + (f" … ({len(items)} in all)" if len(items) > 3 else "")


def analyze(dense: nn.Module, pruner: Any, masks: dict[str, torch.Tensor] | None = None,
            data: Any = None) -> tuple[Any, float]:
    """``pruner.analyze`` on a copy of ``dense`` with ``masks`` applied (exactly the state
    :func:`one_shot` prunes) and the seconds it took; (None, 0.0) for a pruner without one."""
    fn = getattr(pruner, "analyze", None)
    if fn is None:
        return None, 0.0
    masks = dict(masks or {})
    model = copy.deepcopy(dense)
    apply_masks(model, masks)
    t0 = time.perf_counter()
    analysis = fn(model, masks, data)
    return analysis, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# one-shot pipeline


def one_shot(dense: nn.Module, pruner: Any, sparsity: float, *,
             masks: dict[str, torch.Tensor] | None = None, evaluate_on: Any = None,
             pruner_data: Any = None, normalizer: Any = None, calibration: Any = None,
             dense_metrics: dict | None = None, analysis: Any = None
             ) -> tuple[nn.Module, dict[str, torch.Tensor], dict]:
    """Prune a copy of ``dense`` to ``sparsity``; evaluate; re-normalize with ``dense`` as the
    reference (``normalizer.apply(model, references=[dense], weights=[1.0], data=calibration)``);
    re-apply the masks if the normalizer changed a pruned weight; evaluate again.

    ``analysis``: what ``pruner.analyze`` returned for ``dense`` with ``masks`` (see
    :func:`analyze`); passed to ``prune`` only when not None, so pruners whose ``prune`` takes
    no ``analysis`` keep working.

    Returns the final model, the full masks (old ones of other parameters kept) and a record:
    metrics (dense, pruned, normalized), sparsity report, timings and the pruner's report.
    """
    from weightlab.metrics import evaluate

    masks = dict(masks or {})
    model = copy.deepcopy(dense)
    apply_masks(model, masks)
    record: dict[str, Any] = {"sparsity_target": sparsity, "pruner": pruner.name,
                              "params": pruner.params_dict(), "seconds": {}}
    if evaluate_on is not None:
        record["dense"] = dense_metrics or evaluate(dense, evaluate_on)
    extra = {"analysis": analysis} if analysis is not None else {}
    t0 = time.perf_counter()
    new = pruner.prune(model, sparsity, masks, pruner_data, **extra)
    record["seconds"]["prune"] = time.perf_counter() - t0
    masks.update({n: m.bool() for n, m in new.items()})
    apply_masks(model, masks)
    record["pruner_report"] = pruner.last_report
    if evaluate_on is not None:
        record["pruned"] = evaluate(model, evaluate_on)
    if normalizer is not None:
        t0 = time.perf_counter()
        model = normalizer.apply(model, references=[dense], weights=[1.0], data=calibration)
        # folding statistics into weights must not un-prune: check, then re-apply the masks
        record["unpruned_by_normalizer"] = masked_nonzeros(model, masks)
        apply_masks(model, masks)
        record["seconds"]["normalize"] = time.perf_counter() - t0
        record["normalizer"] = normalizer.name
        if evaluate_on is not None:
            record["normalized"] = evaluate(model, evaluate_on)
    rep = sparsity_report({n: m for n, m in masks.items()})
    record["sparsity"] = rep["overall"]
    record["layer_sparsity"] = rep["layers"]
    return model, masks, record


def sweep(dense: nn.Module, pruner: Any, sparsities: Sequence[float], *,
          masks: dict[str, torch.Tensor] | None = None, pruner_data: Any = None,
          on_result: Callable[[float, nn.Module, dict, dict], None] | None = None,
          **kw: Any) -> list[dict]:
    """:func:`one_shot` at each sparsity with one ``pruner``, each from the dense model.

    The pruner's sparsity-independent statistics (``pruner.analyze``: WoodFisher's Fisher
    inverse, diag_fisher's scores) are computed once, on ``dense`` with ``masks`` applied, and
    handed to every ``prune``; the result at each sparsity is identical to a separate
    :func:`one_shot` run. The analysis time is recorded once, as ``seconds["analyze"]`` of the
    first record (absent when the pruner has no analysis). ``on_result(s, model, masks,
    record)`` lets the caller save each pruned model as soon as it exists."""
    from weightlab.metrics import evaluate

    if not hasattr(pruner, "prune"):
        raise UsageError(f"sweep: expected one pruner (an object with prune()), got "
                         f"{type(pruner).__name__}")
    if not sparsities:
        return []
    if kw.get("evaluate_on") is not None and kw.get("dense_metrics") is None:
        kw["dense_metrics"] = evaluate(dense, kw["evaluate_on"])
    analysis, analyze_s = analyze(dense, pruner, masks, pruner_data)
    records = []
    for i, s in enumerate(sparsities):
        model, new_masks, rec = one_shot(dense, pruner, s, masks=masks, pruner_data=pruner_data,
                                         analysis=analysis, **kw)
        if i == 0 and analysis is not None:
            rec["seconds"]["analyze"] = analyze_s
        if on_result is not None:
            on_result(s, model, new_masks, rec)
        records.append(rec)
    return records


def plot_sweep(records: Sequence[dict], path: Any, title: str = "") -> None:
    """Top-1 against sparsity: dense (flat line), pruned, re-normalized
    (:func:`weightlab.plotting.sweep_figure`)."""
    from weightlab.plotting import sweep_figure

    sweep_figure(records, path, title=title)
