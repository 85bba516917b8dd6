"""The zipit plugin's operation ``pfm`` (preserve-first merging sweeps, Qu & Horváth 2024),
registered through ``weightlab_register_operations``."""

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
from weightlab.ops.results import Result

Params = dict[str, Any] | list[str] | None


@operation("pfm")
def pfm(
    model_a: Annotated[CheckpointLike, Opt("first model (the merged space is its space)",
                                           input=True)],
    model_b: Annotated[CheckpointLike, Opt("second model", input=True)],
    matcher: Annotated[Any, Opt("zipit, cca, weight, activation, identity, … or a Matcher")
                       ] = "zipit",
    matcher_param: Annotated[Params, Opt("matcher parameters")] = None,
    normalizer: Annotated[Any, Opt("reset_bn, repair, rescale, bias_calibration")] = None,
    normalizer_param: Annotated[Params, Opt("normalizer parameters")] = None,
    sweep: Annotated[bool, Opt("k = 0 … L−1 (the default without k)")] = False,
    k: Annotated[int | None, Opt("preserve only the first K conv/linear layers", min=0)
                 ] = None,
    data: Annotated[str | None, Opt("dataset (default: the checkpoints')")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    calibration_samples: Annotated[int, Opt("training images for the matcher and the "
                                            "normalizer", min=1)] = 4096,
    out: Annotated[Path | None, Opt("with k: write the partially merged model; with executor: "
                                    "the run directory (step records in OUT/steps/)")] = None,
    plot: Annotated[Path | None, Opt("PNG of accuracy against k and FLOPs")] = None,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
    executor: Annotated[Any, Opt("run the sweep's k as independent steps on this executor "
                                 "(local, ray, slurm, …), each recomputing the alignment; "
                                 "default: in this process, one alignment for all k")] = None,
    executor_param: Annotated[Params, Opt("executor parameters")] = None,
    log: Any = None,
    on_step: Any = None,
    _references: bool = True,
) -> Result:
    """Preserve-first merging: keep the first k conv/linear layers of both models, average
    their aligned features at the merge point, run the merged remainder. For each k: test
    loss and accuracy (after the normalizer), parameters and FLOPs relative to one model
    (preserved layers count twice), next to both models and their logit ensemble.

    With ``executor`` the sweep runs as one step per k (``weightlab_zipit.pfm_fanout``), step
    records under ``out``/steps/: each step is this operation with ``k=k`` and recomputes the
    alignment (deterministic: the same rows as in process; worth it when the steps run on
    separate GPUs or nodes); the references are computed once, by the k = 0 step; a rerun
    redoes only unfinished steps. ``on_step(k)`` is called after each k (progress).
    ``_references=False`` (for the fan-out's other steps) leaves the references out."""
    from weightlab import checkpoint as ckpt_io

    from weightlab_zipit import partial
    from weightlab_zipit import pfm as pfm_mod

    if sweep and k is not None:
        raise UsageError("sweep and k exclude each other: sweep k = 0 … L−1, or give one k")
    if executor is not None:
        if k is not None:
            raise UsageError("executor runs a sweep's k as steps: use it without k=K")
        if out is None:
            raise UsageError("executor: a fanned-out sweep writes its step records; give "
                             "out=DIR")
    elif out is not None and k is None:
        raise UsageError("out writes one partially merged model: use it with k=K")
    for path in (out if executor is None else None, plot):
        check_writable(path, force)
    loaded = load_checkpoints([model_a, model_b], device)
    m = component("matchers", matcher, matcher_param)
    n = component("normalizers", normalizer, normalizer_param)
    bundle = load_bundle(loaded.ckpts[0], data, data_dir, loaded.device)
    require_data(m, "matcher", bundle)
    calib = bundle.loader("calibration", batch_size=500, num_samples=calibration_samples)
    ck0 = loaded.ckpts[0]
    shape = list(ck0.model["input_shape"])
    graph = trace_graph(loaded.models[0], ck0, loaded.device)
    n_layers = len(graph.layers)
    if k is not None and k > n_layers:
        raise UsageError(f"k={k}: the model has {n_layers} conv/linear layers; expected "
                         f"0 … {n_layers}")
    if executor is not None:
        res = _fan_out(loaded.paths, n_layers, out, executor, executor_param, matcher=m,
                       normalizer=n, data=data, data_dir=data_dir,
                       calibration_samples=calibration_samples, device=device, log=log,
                       on_step=on_step)
        res.update({"models": loaded.paths, "input_shape": shape, "matcher": describe(m),
                    "normalizer": describe(n), "calibration_samples": calibration_samples,
                    "layers": n_layers})
        if plot is not None:
            _plot(plot, res)
        return Result(res)
    alignment = m.match(graph, loaded.models[0], loaded.models[1], calib) \
        if m is not None and m.needs_graph else None
    ks = [k] if k is not None else list(range(n_layers))
    test = bundle.loader("test", batch_size=1000)
    kept = {}

    def step(k_done, net):
        if on_step is not None:
            on_step(k_done)
        if out is not None:
            kept["net"] = net

    res = pfm_mod.sweep(loaded.models, graph, alignment, shape, test, ks, normalizer=n,
                        calibration=calib, on_step=step, references=_references)
    res.update({"models": loaded.paths, "input_shape": shape, "matcher": describe(m),
                "normalizer": describe(n), "calibration_samples": calibration_samples,
                "layers": n_layers})
    if out is not None:
        net, row = kept["net"], res["rows"][0]
        prov = {"kind": "partially merged", "sources": res["models"], "matcher": res["matcher"],
                "normalizer": res["normalizer"], "calibration_samples": calibration_samples}
        metrics = {"test": {key: row[key] for key in ("loss", "top1", "top5")}}
        structure = partial.structure_header(net, res["matcher"])
        ck = ckpt_io.from_model(net, ck0.model, data=ck0.data, provenance=prov,
                                metrics=metrics, extra={"structure": structure})
        ckpt_io.save(ck, out, force=force)
        res["out"] = str(out)
    if plot is not None:
        _plot(plot, res)
    return Result(res)


def _fan_out(paths: list[str], n_layers: int, out: Path, executor: Any, executor_param: Params,
             *, matcher: Any, normalizer: Any, data_dir: Any, **kwargs: Any) -> dict[str, Any]:
    """The sweep k = 0 … L−1 as one step per k through ``executor`` (each step is this
    operation with ``k=k``; the alignment is computed once per step)."""
    from weightlab_zipit import pfm_fanout

    ex = component("executors", executor, executor_param)
    try:
        return pfm_fanout.sweep(
            paths, range(n_layers), Path(out), ex,
            matcher=matcher.name if matcher else None,
            matcher_params=matcher.params_dict() if matcher else None,
            normalizer=normalizer.name if normalizer else None,
            normalizer_params=normalizer.params_dict() if normalizer else None,
            data_dir=str(Path(data_dir).resolve()) if data_dir else None, **kwargs)
    finally:
        ex.close()


def _plot(path: Path, res: dict) -> None:
    from weightlab.plotting import save_png

    rows = res["rows"]
    ks = [r["k"] for r in rows]
    acc = [100 * r["top1"] for r in rows]
    ratio = [r["flops_ratio"] for r in rows]
    title = (res["matcher"] or {"name": "identity"})["name"] + \
        (f" + {res['normalizer']['name']}" if res["normalizer"] else "")

    def draw(fig, ax):
        fig.clear()
        ax_k, ax_f = fig.subplots(1, 2, sharey=True)
        ax_k.plot(ks, acc, marker="o", label="partially merged")
        ax_f.plot(ratio, acc, marker="o", label="partially merged")
        for ref, style in zip(res["references"], (":", "-.", "--")):
            top1 = 100 * ref["top1"]
            ax_k.axhline(top1, ls=style, lw=1, color="gray", label=ref["model"])
            ax_f.scatter([ref["flops"] / res["base_cost"]["flops"]], [top1], marker="s",
                         label=ref["model"])
        from matplotlib.ticker import MaxNLocator

        ax_k.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_k.set_xlabel("k (conv/linear layers preserved)")
        ax_k.set_ylabel("test top-1 (%)")
        ax_f.set_xlabel("FLOPs relative to one model")
        for ax_ in (ax_k, ax_f):
            ax_.grid(alpha=0.3)
            ax_.legend(fontsize=7)
        fig.suptitle(f"preserve-first merging: {title}")

    save_png(path, draw, size=(11, 4.2))



OPERATIONS = [pfm]
