"""``merge``, ``interpolate`` and ``diagnose``: align models, average them, re-normalize,
walk the path between two of them, and measure the vanishing feature."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError
from weightlab.ops.common import (
    CheckpointLike,
    check_writable,
    component,
    describe,
    load_bundle,
    load_checkpoints,
    require_data,
    trace_graph,
)
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import CurveResult, DiagnosisResult, MergeResult

Params = dict[str, Any] | list[str] | None


def _prepare(checkpoints, matcher, matcher_param, normalizer, normalizer_param, data, data_dir,
             device, calibration_samples, need_data=False, loaded=None):
    """Models (unless ``loaded`` already holds them), components, data (when someone needs
    it), calibration loader and graph."""
    loaded = loaded if loaded is not None else load_checkpoints(checkpoints, device)
    m = component("matchers", matcher, matcher_param)
    n = component("normalizers", normalizer, normalizer_param)
    wants = need_data or any(c is not None and c.needs_data for c in (m, n))
    bundle = load_bundle(loaded.ckpts[0], data, data_dir, loaded.device) if wants else None
    require_data(m, "matcher", bundle)
    require_data(n, "normalizer", bundle)
    calib = bundle.loader("calibration", batch_size=500, num_samples=calibration_samples) \
        if bundle is not None else None
    graph = None
    if m is not None and m.needs_graph:
        graph = trace_graph(loaded.models[0], loaded.ckpts[0], loaded.device)
    return loaded, m, n, bundle, calib, graph


@operation("merge", out="file")
def merge(
    checkpoints: Annotated[list[CheckpointLike], Opt("two or more checkpoints; all are aligned "
                                                     "to the first", input=True)],
    out: Annotated[Path | None, Opt("merged checkpoint to write (none: not saved)")] = None,
    matcher: Annotated[Any, Opt("identity, weight, activation, zipit, cca, … or a Matcher "
                                "(default: weight; none with base)")] = None,
    matcher_param: Annotated[Params, Opt("matcher parameters")] = None,
    normalizer: Annotated[Any, Opt("reset_bn, repair, rescale, … or a Normalizer")] = None,
    normalizer_param: Annotated[Params, Opt("normalizer parameters")] = None,
    base: Annotated[CheckpointLike | None, Opt("the checkpoint the models were fine-tuned "
                                               "from: merge their task vectors θ_k − θ_base "
                                               "with method", input=True)] = None,
    method: Annotated[Any, Opt("task-vector merge method (with base): task_arithmetic, ties, "
                               "dare, model_stock, slerp or a MergeMethod")] = None,
    method_param: Annotated[Params, Opt("merge method parameters", aliases=("param",))
                            ] = None,
    alpha: Annotated[float | None, Opt("weight of the second model (two models)", min=0,
                                       max=1)] = None,
    weights: Annotated[list[float] | str | None, Opt("per-model weights")] = None,
    data: Annotated[str | None, Opt("dataset (default: the checkpoints')")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    calibration_samples: Annotated[int, Opt("training images for data-driven matchers and "
                                            "normalizers", min=1)] = 4096,
    evaluate: Annotated[bool, Opt("test accuracy of the inputs and the result")] = True,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
) -> MergeResult:
    """Align N models to the first, average them, optionally re-normalize; write a plain
    checkpoint of the same architecture with the provenance in its header. With ``base``
    (models fine-tuned from one checkpoint) the models are not aligned: ``method`` combines
    their task vectors θ_k − θ_base (TIES, DARE, …), then the normalizer applies."""
    from weightlab import checkpoint as ckpt_io
    from weightlab.console import plain
    from weightlab.merging import merge as run_merge
    from weightlab.merging import merge_from_base, normalize_weights
    from weightlab.metrics import evaluate as run_eval

    if len(checkpoints) < 2:
        raise UsageError(f"checkpoints: merge needs at least two, got {len(checkpoints)}")
    if base is None and method is not None:
        raise UsageError("method: task-vector merging needs base=CHECKPOINT, the checkpoint "
                         "the models were fine-tuned from")
    if base is not None and method is None:
        raise UsageError("base: name how the task vectors are combined: method=task_arithmetic,"
                         " ties, dare, model_stock or slerp")
    if out is not None:
        check_writable(out, force)
    w = normalize_weights(_floats(weights, "weights"), len(checkpoints), alpha)
    meth = component("merge_methods", method, method_param)
    loaded = load_checkpoints(checkpoints, device)
    based = _load_base(base, loaded) if meth is not None else None
    loaded, m, n, bundle, calib, graph = _prepare(
        checkpoints, matcher if matcher is not None or base is not None else "weight",
        matcher_param, normalizer, normalizer_param, data, data_dir, device,
        calibration_samples, need_data=evaluate, loaded=loaded)
    if meth is None:
        res = run_merge(loaded.models, w, matcher=m, graph=graph, match_data=calib,
                        normalizer=n, calibration=calib)
    else:
        if m is not None and m.needs_graph:
            raise UsageError(f"matcher={m.name}: models fine-tuned from one base are merged "
                             f"in place; with base use no matcher (or identity)")
        res = merge_from_base(based.models[0], loaded.models, w, method=meth, normalizer=n,
                              calibration=calib)
    ck0 = loaded.ckpts[0]
    rows: list[dict[str, Any]] = []
    metrics = {}
    if bundle is not None and evaluate:
        test = bundle.loader("test", batch_size=1000)
        for p, net in zip(loaded.paths, loaded.models):
            rows.append({"model": p, **run_eval(net, test)})
        if meth is not None:
            rows.append({"model": f"base {based.paths[0]}", **run_eval(based.models[0], test)})
        metrics = {"test": run_eval(res.model, test)}
        rows.append({"model": f"merged → {out}" if out else "merged", **metrics["test"]})
    prov = {"kind": "merged", "sources": loaded.paths, "weights": w,
            "matcher": describe(m), "normalizer": describe(n),
            "calibration_samples": calibration_samples if calib is not None else 0}
    if meth is not None:
        prov.update({"base": based.paths[0], "method": describe(meth)})
    ck = ckpt_io.from_model(res.model, ck0.model, data=ck0.data, metrics=metrics,
                            provenance=prov)
    if out is not None:
        ckpt_io.save(ck, out, force=force)
    # what each matcher reports about its alignment (objective, sweeps, cycle error, whether
    # it converged): one entry per model, None for the reference and unaligned models
    info = [None if al is None else plain(al.info) for al in res.alignments]
    return MergeResult({"out": str(out) if out else None, "weights": w, "evaluation": rows,
                        "provenance": prov, "alignment": info}, model=res.model, checkpoint=ck,
                       aligned=res.aligned, alignments=res.alignments)


def _load_base(base, loaded):
    """The base checkpoint, checked against the first model: one line naming the base file
    and the first tensor that differs."""
    from weightlab.merging import check_compatible

    based = load_checkpoints([base], loaded.device, check=False)
    check_compatible([loaded.models[0].state_dict(), based.models[0].state_dict()],
                     [loaded.paths[0], based.paths[0]])
    return based


def _floats(value: Any, field: str) -> list[float] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [float(x) for x in items]
    except (TypeError, ValueError):
        raise UsageError(f"{field}={value!r}: expected numbers such as 0.5,0.5") from None


@operation("interpolate")
def interpolate(
    model_a: Annotated[CheckpointLike, Opt("first endpoint", input=True)],
    model_b: Annotated[CheckpointLike, Opt("second endpoint (aligned to the first)",
                                           input=True)],
    matcher: Annotated[Any, Opt("identity, weight, activation, … or a Matcher")] = "weight",
    matcher_param: Annotated[Params, Opt("matcher parameters")] = None,
    normalizer: Annotated[Any, Opt("reset_bn, repair, rescale, … or a Normalizer")] = None,
    normalizer_param: Annotated[Params, Opt("normalizer parameters")] = None,
    points: Annotated[int, Opt("α values in linspace(0, 1, n)", min=2)] = 11,
    splits: Annotated[list[str] | str, Opt("train, test or both")] = "train,test",
    train_samples: Annotated[int, Opt("training images evaluated per α", min=1)] = 10000,
    data: Annotated[str | None, Opt("dataset (default: the checkpoints')")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    calibration_samples: Annotated[int, Opt("training images for data-driven matchers and "
                                            "normalizers", min=1)] = 4096,
    normalize_endpoints: Annotated[bool, Opt("apply the normalizer at α = 0 and 1 too (false: "
                                             "endpoints raw, as the seed code)")] = True,
    plot: Annotated[Path | None, Opt("PNG to write (default: none)")] = None,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
) -> CurveResult:
    """Loss and top-1 along θ(α) = (1−α)θ_A + α·align(θ_B) on train and test, with the loss
    and accuracy barriers (the seed's, against the endpoints' mean, and Git Re-Basin's,
    against the straight line; accuracy as a fraction)."""
    from weightlab.interpolation import curve

    wanted = [s.strip() for s in (splits.split(",") if isinstance(splits, str) else splits)
              if s.strip()]
    bad = [s for s in wanted if s not in ("train", "test")]
    if bad or not wanted:
        raise UsageError(f"splits={splits!r}: expected a comma list of train, test")
    check_writable(plot, force)
    loaded, m, n, bundle, calib, graph = _prepare(
        [model_a, model_b], matcher, matcher_param, normalizer, normalizer_param, data,
        data_dir, device, calibration_samples, need_data=True)
    alignment = m.match(graph, loaded.models[0], loaded.models[1], calib) \
        if m is not None and m.needs_graph else None
    loaders = {}
    if "train" in wanted:
        loaders["train"] = bundle.loader("calibration", batch_size=1000,
                                         num_samples=train_samples, seed=1)
    if "test" in wanted:
        loaders["test"] = bundle.loader("test", batch_size=1000)
    alphas = [i / (points - 1) for i in range(points)]
    res = curve(loaded.models[0], loaded.models[1], loaders, alphas, alignment=alignment,
                graph=graph, normalizer=n, calibration=calib,
                normalize_endpoints=normalize_endpoints)
    res.update({"matcher": m.name if m else "identity", "normalizer": n.name if n else None,
                "models": loaded.paths, "splits": wanted,
                "model": loaded.ckpts[0].model["name"], "data": bundle.name})
    if plot is not None:
        from weightlab.plotting import interpolation_figure

        interpolation_figure([res], plot, splits=wanted)
    return CurveResult(res, plot=plot)


@operation("diagnose")
def diagnose(
    checkpoints: Annotated[list[CheckpointLike], Opt("endpoint models (merging) or the "
                                                     "original (with pruned)", input=True)],
    merged: Annotated[CheckpointLike | None, Opt("a merged checkpoint to diagnose",
                                                 input=True)] = None,
    pruned: Annotated[CheckpointLike | None, Opt("a pruned checkpoint to diagnose",
                                                 input=True)] = None,
    matcher: Annotated[Any, Opt("merge on the fly with this matcher (α = ½) when no merged "
                                "model is given")] = None,
    matcher_param: Annotated[Params, Opt("matcher parameters")] = None,
    normalizer: Annotated[Any, Opt("normalizer for the on-the-fly merge")] = None,
    normalizer_param: Annotated[Params, Opt("normalizer parameters")] = None,
    samples: Annotated[int, Opt("test images measured", min=1)] = 2048,
    tap: Annotated[str, Opt("where features are read: all (every conv/linear/norm output, as "
                            "the VF notebooks), layer (conv/linear outputs) or norm (after "
                            "the norm that reads a layer, where REPAIR corrects)")] = "all",
    data: Annotated[str | None, Opt("dataset (default: the checkpoints')")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    calibration_samples: Annotated[int, Opt("training images for data-driven matchers and "
                                            "normalizers", min=1)] = 4096,
    plot: Annotated[Path | None, Opt("PNG of E_l against relative depth")] = None,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
) -> DiagnosisResult:
    """The vanishing feature: per-layer input-induced magnitude m_l and the ratio E_l of a
    merged (or pruned) model to its references, against relative depth."""
    from weightlab.merging import check_compatible
    from weightlab.merging import merge as run_merge
    from weightlab.vanishing import TAPS
    from weightlab.vanishing import diagnose as run_diag

    if tap not in TAPS:
        raise UsageError(f"tap={tap!r}: expected one of {', '.join(TAPS)}")
    if pruned is not None and (merged is not None or len(checkpoints) != 1):
        raise UsageError("pruned: takes exactly one original checkpoint and no merged model")
    if pruned is None and len(checkpoints) < 2:
        raise UsageError("checkpoints: diagnose needs two or more endpoints (merging) or one "
                         "original with pruned=P")
    check_writable(plot, force)
    target_in = pruned if pruned is not None else merged
    on_the_fly = target_in is None
    loaded, m, n, bundle, calib, graph = _prepare(
        checkpoints, (matcher or "identity") if on_the_fly else None, matcher_param,
        normalizer if on_the_fly else None, normalizer_param, data, data_dir, device,
        calibration_samples, need_data=True)
    refs = loaded.models
    if on_the_fly:
        w = [1.0 / len(refs)] * len(refs)
        target = run_merge(refs, w, matcher=m, graph=graph, match_data=calib, normalizer=n,
                           calibration=calib).model
        # the normalizer as the caller named it ("none" included: recipes' matrices say it)
        named = normalizer if isinstance(normalizer, str) else (n.name if n else None)
        label = f"merged ({m.name}{' + ' + named if named else ''})"
    else:
        tl = load_checkpoints([target_in], loaded.device, check=False)
        target, tck = tl.models[0], tl.ckpts[0]
        check_compatible([loaded.ckpts[0].state, tck.state], [loaded.paths[0], tl.paths[0]])
        label = "pruned" if pruned is not None else "merged"
    test = bundle.loader("test", batch_size=500)
    res = run_diag(refs, target, test, input_shape=loaded.ckpts[0].model["input_shape"],
                   samples=samples, labels=loaded.paths, tap=tap)
    res["target_label"] = label
    res.update({"model": loaded.ckpts[0].model["name"], "data": bundle.name,
                "target_path": None if on_the_fly else tl.paths[0],
                "matcher": m.name if on_the_fly and m else None,
                "normalizer": n.name if on_the_fly and n else None})
    if plot is not None:
        from weightlab.plotting import diagnose_figure

        diagnose_figure([res], plot)
    return DiagnosisResult(res, plot=plot, target=target)

