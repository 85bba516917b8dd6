"""``compare``: the zoo's methods side by side under one protocol, one table — merging or pruning.

**Merging** (``matchers``; the default): every matcher × normalizer combination on the same
models and data. The checkpoints are loaded once, the calibration images (the first
``calibration_samples`` training images) and the test set are the same for every combination,
and each row is one merge with equal weights. Per row: the merged model's test top-1 and loss,
the loss barrier at the merge point (L(merged) − mean of the endpoints' losses: Git Re-Basin's
barrier at α = ½ for two models), and the wall time of aligning + averaging + re-normalizing.

**Pruning** (``pruners`` and ``sparsities``): every checkpoint pruned one-shot by every
pruner × sparsity × normalizer, each row exactly what ``prune`` with those settings gives (the
dense model as the normalizer's reference, the masks re-applied after it; the same calibration
images for every pruner and normalizer, the same test set). A sparsity is a fraction of zeros
(``0.9``) or ``N:M`` (``2:4``: N of every M consecutive input weights zero), which runs a pruner
with a ``pattern`` parameter (``obs``) as ``pattern=N:M`` at sparsity N/M. Per row:

- ``achieved``: the fraction of exact zeros in the pruned weights of the final model, measured
  on the weights (``masked``: what the masks remove; lower when a pruner also zeroes kept
  weights, as ``obs`` does for inputs that are 0 on every calibration image);
- ``top1``, ``loss`` on the test set and ``drop``, the dense model's top-1 minus ``top1``;
- ``seconds`` of analysis + pruning + re-normalization. A pruner's sparsity-independent
  analysis (WoodFisher's Fisher inverse) is computed once per pruner and model and shared by
  its rows, as in a ``prune`` sweep; its time is counted in every row (the cost of that row
  run on its own).

With several checkpoints (seeds of one architecture) each row holds the mean over them, the
sample standard deviation of top-1 and loss (``top1_std``, ``loss_std``) and every model's
figures under ``models``.

Either way a combination that cannot run (a joint matcher with more than two models, a
BatchNorm reset of a model without BatchNorm, N:M with a pruner that has no pattern) is a row
with its one-line reason instead of figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError, WeightlabError
from weightlab.ops.common import (
    CheckpointLike,
    check_writable,
    component,
    load_bundle,
    load_checkpoints,
    trace_graph,
)
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import Result

MATCHERS = ("identity", "weight", "activation")
CALIBRATION = {"merging": 4096, "pruning": 2000}  # the defaults of merge and prune


@operation("compare", out="file")
def compare(
    checkpoints: Annotated[list[CheckpointLike], Opt("checkpoints of one architecture: two or "
                                                     "more to merge, one or more to prune",
                                                     input=True)],
    matchers: Annotated[list[str] | str | None, Opt("matchers to compare by merging (default "
                                                    "identity, weight, activation unless "
                                                    "pruners are given)")] = None,
    pruners: Annotated[list[Any] | str | None, Opt("pruners to compare by one-shot pruning "
                                                   "(names or Pruner instances)")] = None,
    sparsities: Annotated[list[float | str] | str | None, Opt(
        "with pruners: fractions of zeros in [0, 1) and N:M patterns (2:4)")] = None,
    normalizers: Annotated[list[Any] | str, Opt("normalizers to compare (none: no "
                                                "correction; after pruning: re-normalize "
                                                "against the dense model)")] = ("none",),
    data: Annotated[str | None, Opt("dataset (default: the checkpoints')")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    calibration_samples: Annotated[int | None, Opt(
        "training images for data-driven matchers, pruners and normalizers (default: 4096 "
        "merging, 2000 pruning: the defaults of merge and prune)", min=1)] = None,
    plot: Annotated[Path | None, Opt("write a plot here: merged top-1 per combination, or "
                                     "top-1 against sparsity per pruner × normalizer")] = None,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> Result:
    """Merge the same models with every matcher × normalizer (equal weights), or prune them
    one-shot with every pruner × sparsity × normalizer, and tabulate test top-1 and loss with
    the loss barrier (merging) or the achieved sparsity and top-1 drop (pruning), and the time
    of each. ``on_result(row)`` is called after each combination of each model (progress)."""
    pruner_list = _items(pruners)
    if pruner_list is None:
        if sparsities is not None:
            raise UsageError("sparsities: go with pruners=… (the pruning comparison); "
                             "merging compares matchers")
        if plot is not None:
            check_writable(plot, force)
        return _merging(checkpoints, _items(matchers) or list(MATCHERS),
                        _items(normalizers) or ["none"], data, data_dir,
                        calibration_samples or CALIBRATION["merging"], plot, device,
                        on_result)
    if matchers is not None:
        raise UsageError("compare merges (matchers=…) or prunes (pruners=… sparsities=…); "
                         "pass one of them")
    if not pruner_list:
        raise UsageError("pruners: expected at least one pruner")
    if sparsities is None:
        raise UsageError("pruners: give the sparsities to prune to as well, e.g. "
                         "sparsities=0.5,0.9,2:4")
    specs = sparsity_specs(sparsities)
    if plot is not None:
        check_writable(plot, force)
    return _pruning(checkpoints, pruner_list, specs,
                    _items(normalizers) or ["none"], data, data_dir,
                    calibration_samples or CALIBRATION["pruning"], plot, device, on_result)


def _items(value: Any) -> list[Any] | None:
    """A list option given as a list or a comma-separated string (the CLI's and a recipe's
    spelling): its non-empty items; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [v.strip() if isinstance(v, str) else v for v in value
                if not (isinstance(v, str) and not v.strip())]
    return [value]


# --------------------------------------------------------------------------------------------
# merging


def _merging(checkpoints: Sequence[CheckpointLike], matchers: list[Any], normalizers: list[Any],
             data: str | None, data_dir: Path | None, calibration_samples: int,
             plot: Path | None, device: str | None, on_result: Any) -> Result:
    from weightlab.merging import merge as run_merge
    from weightlab.metrics import evaluate as run_eval

    if len(checkpoints) < 2:
        raise UsageError(f"checkpoints: merging needs at least two, got {len(checkpoints)} "
                         f"(to compare pruners on one model, pass pruners=… and sparsities=…)")
    combos = [(m, n) for m in matchers for n in normalizers]
    parts = [(component("matchers", m, None), component("normalizers", n, None))
             for m, n in combos]  # unknown names fail here, before anything is loaded
    loaded = load_checkpoints(checkpoints, device)
    bundle = load_bundle(loaded.ckpts[0], data, data_dir, loaded.device)
    calib = bundle.loader("calibration", batch_size=500, num_samples=calibration_samples)
    test = bundle.loader("test", batch_size=1000)
    ends = [run_eval(net, test) for net in loaded.models]
    mean_loss = sum(e["loss"] for e in ends) / len(ends)
    graph = None
    k = len(loaded.models)
    rows: list[dict[str, Any]] = []
    for (m_given, n_given), (m, n) in zip(combos, parts, strict=True):
        row: dict[str, Any] = {"matcher": _label(m_given, m), "normalizer": _label(n_given, n)}
        try:
            if m is not None and m.needs_graph and graph is None:
                graph = trace_graph(loaded.models[0], loaded.ckpts[0], loaded.device)
            t0 = time.perf_counter()
            res = run_merge(loaded.models, [1.0 / k] * k, matcher=m, graph=graph,
                            match_data=calib, normalizer=n, calibration=calib)
            seconds = time.perf_counter() - t0
            ev = run_eval(res.model, test)
            row.update(top1=ev["top1"], loss=ev["loss"], barrier=ev["loss"] - mean_loss,
                       seconds=seconds, error=None)
        except WeightlabError as e:
            row.update(top1=None, loss=None, barrier=None, seconds=None,
                       error=_first_line(e))
        rows.append(row)
        if on_result is not None:
            on_result(row)
    out = {"mode": "merging", "checkpoints": loaded.paths,
           "endpoints": [{"model": p, **e} for p, e in zip(loaded.paths, ends, strict=True)],
           "rows": rows, "calibration_samples": calibration_samples}
    if plot is not None:
        from weightlab.plotting import compare_figure

        compare_figure(rows, ends, plot)
        out["plot"] = str(plot)
    return Result(out)


# --------------------------------------------------------------------------------------------
# pruning


@dataclass(frozen=True)
class SparsitySpec:
    """One requested sparsity: ``label`` as the table shows it (``0.9``, ``2:4``), ``target``
    the fraction of zeros, ``nm`` (N, M) for an N:M pattern."""

    label: str
    target: float
    nm: tuple[int, int] | None = None


def sparsity_specs(values: Any) -> list[SparsitySpec]:
    """``[0.5, "0.9", "2:4"]`` or ``"0.5,0.9,2:4"`` as specs; a UsageError naming the first bad
    value (not a number in [0, 1) or N:M with 0 < N < M) or a repeated one."""
    from weightlab.pruners import parse_nm

    items = _items(values) or []
    if not items:
        raise UsageError("sparsities: expected at least one, e.g. 0.5,0.9,2:4")
    out: list[SparsitySpec] = []
    for v in items:
        text = str(v).strip()
        try:
            nm = parse_nm(text) if isinstance(v, str) else None
        except ValueError as e:
            raise UsageError(f"sparsities: {e}") from None
        if nm is not None:
            spec = SparsitySpec(f"{nm[0]}:{nm[1]}", nm[0] / nm[1], nm)
        else:
            try:
                target = float(v)
            except (TypeError, ValueError):
                raise UsageError(f"sparsities: {text!r}: expected a fraction of zeros in "
                                 f"[0, 1) or N:M (N of every M weights zero), e.g. 0.9 or "
                                 f"2:4") from None
            if isinstance(v, bool) or not 0.0 <= target < 1.0:
                raise UsageError(f"sparsities: {text!r}: expected a fraction of zeros in "
                                 f"[0, 1)")
            spec = SparsitySpec(f"{target:g}", target)
        if any(s.label == spec.label for s in out):
            raise UsageError(f"sparsities: {spec.label} is given twice")
        out.append(spec)
    return out


def nm_pruners() -> list[str]:
    """The registered pruners that prune N:M: those with a ``pattern`` parameter."""
    from weightlab import plugins

    return list(dict.fromkeys(e.name for e in plugins.registry().all("pruners")
                              if any(p["name"] == "pattern" for p in e.cls.parameters())))


def _variant(base: Any, spec: SparsitySpec) -> tuple[Any, str | None]:
    """The pruner that prunes to ``spec``: ``base`` itself for a fraction, a copy with
    ``pattern=N:M`` for N:M (as ``prune -p pattern=N:M --sparsity N/M``); or the reason why
    none can."""
    if spec.nm is None:
        return base, None
    if "pattern" not in base.params_dict():
        able = ", ".join(nm_pruners()) or "none installed"
        return None, f"{base.name}: no N:M pattern (N:M pruners: {able})"
    return type(base).create({**base.params_dict(), "pattern": spec.label}), None


def _pruning(checkpoints: Sequence[CheckpointLike], pruners: list[Any],
             specs: list[SparsitySpec], normalizers: list[Any], data: str | None,
             data_dir: Path | None, calibration_samples: int, plot: Path | None,
             device: str | None, on_result: Any) -> Result:
    from weightlab import pruning
    from weightlab.merging import check_compatible
    from weightlab.metrics import evaluate as run_eval
    from weightlab.ops.pruning import pruner_data

    if not checkpoints:
        raise UsageError("checkpoints: expected at least one checkpoint to prune")
    bases = [component("pruners", p, None) for p in pruners]  # unknown names fail here
    names = [_label(p, b) for p, b in zip(pruners, bases, strict=True)]
    norms = [(_label(n, c), c) for n in normalizers
             for c in [component("normalizers", n, None)]]
    # per pruner: the pruners that run its sparsities (one for every fraction, one per N:M)
    groups: list[list[tuple[Any, str | None, list[SparsitySpec]]]] = []
    for base in bases:
        fractions = [s for s in specs if s.nm is None]
        group = [(base, None, fractions)] if fractions else []
        group += [(*_variant(base, s), [s]) for s in specs if s.nm is not None]
        groups.append(group)
    loaded = load_checkpoints(checkpoints, device, check=False)
    if len(loaded.models) > 1:
        check_compatible([m.state_dict() for m in loaded.models], loaded.paths)
    bundle = load_bundle(loaded.ckpts[0], data, data_dir, loaded.device)
    calib = bundle.loader("calibration", batch_size=500, num_samples=calibration_samples)
    test = bundle.loader("test", batch_size=1000)
    dense = [run_eval(net, test) for net in loaded.models]
    per: dict[tuple[int, str, int], list[dict[str, Any]]] = {}

    def keep(key: tuple[int, str, int], res: dict[str, Any]) -> None:
        per.setdefault(key, []).append(res)
        if on_result is not None:
            on_result({"pruner": names[key[0]], "sparsity": key[1],
                       "normalizer": norms[key[2]][0], **res})

    for path, net, ck, ref in zip(loaded.paths, loaded.models, loaded.ckpts, dense,
                                  strict=True):
        masks = ck.masks or {}
        for i, group in enumerate(groups):
            for pruner, reason, todo in group:
                analysis, analyze_s = None, 0.0
                feed = None
                if reason is None:
                    try:  # the sparsity-independent statistics: once for the group
                        feed = pruner_data(bundle, pruner, calibration_samples)
                        analysis, analyze_s = pruning.analyze(net, pruner, masks, feed)
                    except WeightlabError as e:
                        reason = _first_line(e)
                for spec in todo:
                    for j, (_, norm) in enumerate(norms):
                        if reason is not None:
                            keep((i, spec.label, j), {"model": path, "error": reason})
                            continue
                        keep((i, spec.label, j), _prune_one(
                            net, pruner, spec, masks, norm, feed=feed, calib=calib, test=test,
                            dense=ref, analysis=analysis, analyze_s=analyze_s, path=path))
                del analysis
    rows = [_row(names[i], spec, norms[j][0], per[(i, spec.label, j)])
            for i in range(len(bases)) for spec in specs for j in range(len(norms))]
    out = {"mode": "pruning", "checkpoints": loaded.paths,
           "dense": [{"model": p, **e} for p, e in zip(loaded.paths, dense, strict=True)],
           "rows": rows, "calibration_samples": calibration_samples}
    if plot is not None:
        from weightlab.plotting import pruning_compare_figure

        pruning_compare_figure(rows, dense, plot)
        out["plot"] = str(plot)
    return Result(out)


def _prune_one(net: Any, pruner: Any, spec: SparsitySpec, masks: dict[str, Any], norm: Any, *,
               feed: Any, calib: Any, test: Any, dense: dict[str, Any], analysis: Any,
               analyze_s: float, path: str) -> dict[str, Any]:
    """One model pruned to one sparsity by one pruner, then re-normalized
    (:func:`weightlab.pruning.one_shot`, as ``prune`` runs it): its figures, or its reason."""
    from weightlab import pruning

    try:
        model, new_masks, rec = pruning.one_shot(
            net, pruner, spec.target, masks=masks, evaluate_on=test, pruner_data=feed,
            normalizer=norm, calibration=calib, dense_metrics=dense, analysis=analysis)
    except WeightlabError as e:
        return {"model": path, "error": _first_line(e)}
    final = rec.get("normalized") or rec["pruned"]
    seconds = analyze_s + rec["seconds"]["prune"] + rec["seconds"].get("normalize", 0.0)
    return {"model": path, "achieved": zeros_fraction(model, new_masks),
            "masked": rec["sparsity"], "top1": final["top1"],
            "loss": final["loss"], "drop": dense["top1"] - final["top1"], "seconds": seconds,
            "error": None}


def zeros_fraction(model: Any, masks: dict[str, Any]) -> float:
    """The fraction of exact zeros among the weights of the pruned parameters (those
    ``masks`` names), measured on the model, not read from the masks."""
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in masks)
    zeros = sum(int((params[n] == 0).sum()) for n in masks)
    return zeros / max(total, 1)


def _row(pruner: str, spec: SparsitySpec, normalizer: str, results: list[dict[str, Any]]
         ) -> dict[str, Any]:
    """One table row: the mean over the models (the standard deviation of top-1 and loss with
    two or more), or the first model's reason when any could not run."""
    row: dict[str, Any] = {"pruner": pruner, "sparsity": spec.label, "target": spec.target,
                           "normalizer": normalizer}
    error = next((r["error"] for r in results if r.get("error")), None)
    keys = ("achieved", "masked", "top1", "loss", "drop", "seconds")
    if error is not None:
        row.update({k: None for k in keys}, top1_std=None, loss_std=None, error=error)
    else:
        row.update({k: statistics.fmean(r[k] for r in results) for k in keys}, error=None)
        for k in ("top1", "loss"):
            row[f"{k}_std"] = (statistics.stdev(r[k] for r in results)
                               if len(results) > 1 else None)
    row["models"] = results
    return row


def _label(given: Any, comp: Any) -> str:
    return "none" if comp is None else comp.name if not isinstance(given, str) else given


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
