"""``weightlab merge | interpolate | diagnose | flops``."""

from __future__ import annotations

from pathlib import Path

import typer

from weightlab_cli.common import (
    DATA_DIR_OPT,
    DEVICE_OPT,
    FORCE_OPT,
    JSON_OPT,
    info,
    pct,
    print_json,
    table,
)

MATCHER_OPT = typer.Option("weight", "--matcher", help="alignment: identity, weight, "
                           "activation, zipit, cca, …")
NORMALIZER_OPT = typer.Option(None, "--normalizer", help="reset_bn, repair, rescale, reshift, "
                              "bias_calibration (default: none)")
MPARAM_OPT = typer.Option(None, "--matcher-param", help="matcher parameter key=value")
NPARAM_OPT = typer.Option(None, "--normalizer-param", help="normalizer parameter key=value")
CALIB_OPT = typer.Option(4096, "--calibration-samples", min=1,
                         help="training images for data-driven matchers and normalizers")


def _setup(paths, matcher, matcher_param, normalizer, normalizer_param, data, data_dir, device,
           calibration_samples, need_data=False):
    from weightlab_cli.loading import component, load_bundle, load_models, require_data, trace_graph

    loaded = load_models(paths, device)
    m = component("matchers", matcher, matcher_param)
    n = component("normalizers", normalizer, normalizer_param)
    wants = need_data or any(c is not None and c.needs_data for c in (m, n))
    bundle = None
    if wants:
        bundle = load_bundle(loaded.ckpts[0], data, data_dir, loaded.device)
    require_data(m, "--matcher", bundle)
    require_data(n, "--normalizer", bundle)
    calib = bundle.loader("calibration", batch_size=500, num_samples=calibration_samples) \
        if bundle is not None else None
    graph = None
    if m is not None and m.name != "identity":
        graph = trace_graph(loaded.models[0], loaded.ckpts[0], loaded.device)
    return loaded, m, n, bundle, calib, graph


def merge(
    checkpoints: list[Path] = typer.Argument(..., help="two or more checkpoints; all are "
                                             "aligned to the first"),
    out: Path = typer.Option(..., "--out", "-o", help="merged checkpoint to write"),
    matcher: str = MATCHER_OPT, matcher_param: list[str] = MPARAM_OPT,
    normalizer: str = NORMALIZER_OPT, normalizer_param: list[str] = NPARAM_OPT,
    alpha: float = typer.Option(None, "--alpha", help="weight of the second model (two models)"),
    weights: str = typer.Option(None, "--weights", help="comma list of per-model weights"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoints')"),
    data_dir: Path = DATA_DIR_OPT, calibration_samples: int = CALIB_OPT,
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                  help="report test accuracy of inputs and result"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """Align N models to the first, average them, optionally re-normalize; write a plain
    checkpoint of the same architecture with the provenance in its header."""
    from weightlab import checkpoint as ckpt_io
    from weightlab.atomic import check_writable
    from weightlab.errors import UsageError
    from weightlab.evaluate import evaluate as run_eval
    from weightlab.merging import merge as run_merge
    from weightlab.merging import normalize_weights

    if len(checkpoints) < 2:
        raise UsageError("merge needs at least two checkpoints")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {alpha} is outside [0, 1]")
    check_writable(out, force)
    w = normalize_weights([float(x) for x in weights.split(",")] if weights else None,
                          len(checkpoints), alpha)
    loaded, m, n, bundle, calib, graph = _setup(
        checkpoints, matcher, matcher_param, normalizer, normalizer_param, data, data_dir,
        device, calibration_samples, need_data=evaluate)
    res = run_merge(loaded.models, w, matcher=m, graph=graph, match_data=calib, normalizer=n,
                    calibration=calib)
    ck0 = loaded.ckpts[0]
    rows = []
    metrics = {}
    if bundle is not None and evaluate:
        test = bundle.loader("test", batch_size=1000)
        for p, net in zip(checkpoints, loaded.models):
            rows.append({"model": str(p), **run_eval(net, test)})
        metrics = {"test": run_eval(res.model, test)}
        rows.append({"model": f"merged → {out}", **metrics["test"]})
    prov = {"kind": "merged", "sources": [str(p) for p in checkpoints], "weights": w,
            "matcher": {"name": m.name, "params": m.params_dict()} if m else None,
            "normalizer": {"name": n.name, "params": n.params_dict()} if n else None,
            "calibration_samples": calibration_samples if calib is not None else 0}
    ck = ckpt_io.from_model(res.model, ck0.model, data=ck0.data, metrics=metrics,
                            provenance=prov)
    ckpt_io.save(ck, out, force=force)
    if json_out:
        print_json({"out": str(out), "weights": w, "evaluation": rows, "provenance": prov})
    else:
        if rows:
            table("merge", ["model", "loss", "top-1"],
                  [[r["model"], r["loss"], pct(r["top1"])] for r in rows])
        info(f"wrote {out}")


def interpolate(
    model_a: Path = typer.Argument(..., help="first endpoint"),
    model_b: Path = typer.Argument(..., help="second endpoint (aligned to the first)"),
    matcher: str = MATCHER_OPT, matcher_param: list[str] = MPARAM_OPT,
    normalizer: str = NORMALIZER_OPT, normalizer_param: list[str] = NPARAM_OPT,
    points: int = typer.Option(11, "--points", min=2, help="α values in linspace(0, 1, n)"),
    splits: str = typer.Option("train,test", "--splits", help="comma list: train, test"),
    train_samples: int = typer.Option(10000, "--train-samples", min=1,
                                      help="training images evaluated per α"),
    data: str = typer.Option(None, "--data"), data_dir: Path = DATA_DIR_OPT,
    calibration_samples: int = CALIB_OPT,
    plot: Path = typer.Option(None, "--plot", help="PNG to write (default: none)"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """Loss and top-1 along θ(α) = (1−α)θ_A + α·align(θ_B) on train and test, with the loss
    and accuracy barriers."""
    from weightlab.atomic import check_writable
    from weightlab.errors import UsageError
    from weightlab.interpolation import curve

    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    bad = [s for s in wanted if s not in ("train", "test")]
    if bad or not wanted:
        raise UsageError(f"--splits {splits!r}: expected a comma list of train, test")
    if plot is not None:
        check_writable(plot, force)
    loaded, m, n, bundle, calib, graph = _setup(
        [model_a, model_b], matcher, matcher_param, normalizer, normalizer_param, data,
        data_dir, device, calibration_samples, need_data=True)
    alignment = None
    if m is not None and m.name != "identity":  # identity: naive averaging, no graph needed
        alignment = m.match(graph, loaded.models[0], loaded.models[1], calib)
    loaders = {}
    if "train" in wanted:
        loaders["train"] = bundle.loader("calibration", batch_size=1000,
                                         num_samples=train_samples, seed=1)
    if "test" in wanted:
        loaders["test"] = bundle.loader("test", batch_size=1000)
    alphas = [i / (points - 1) for i in range(points)]
    res = curve(loaded.models[0], loaded.models[1], loaders, alphas, alignment=alignment,
                graph=graph, normalizer=n, calibration=calib)
    res.update({"matcher": matcher, "normalizer": normalizer,
                "models": [str(model_a), str(model_b)],
                "model": loaded.ckpts[0].model["name"], "data": bundle.name})
    if plot is not None:
        _plot_curve(plot, res, wanted)
    if json_out:
        print_json(res)
        return
    cols = ["α"] + [f"{s} {k}" for s in wanted for k in ("loss", "top-1")]
    rows = [[f"{a:.2f}"] + [v for s in wanted for v in (res[s]["loss"][i],
                                                         pct(res[s]["top1"][i]))]
            for i, a in enumerate(alphas)]
    table(f"interpolation ({matcher}{' + ' + normalizer if normalizer else ''})", cols, rows)
    table("barriers", ["split", "loss barrier", "accuracy barrier"],
          [[s, res[s]["loss_barrier"], pct(res[s]["acc_barrier"])] for s in wanted])
    if plot is not None:
        info(f"wrote {plot}")


def _plot_curve(path: Path, res: dict, splits: list[str]) -> None:
    from weightlab.plotting import interpolation_figure

    interpolation_figure([res], path, splits=splits)


def diagnose(
    checkpoints: list[Path] = typer.Argument(..., help="endpoint models (merging) or the "
                                             "original (with --pruned)"),
    merged: Path = typer.Option(None, "--merged", help="a merged checkpoint to diagnose"),
    pruned: Path = typer.Option(None, "--pruned", help="a pruned checkpoint to diagnose"),
    matcher: str = typer.Option(None, "--matcher", help="merge on the fly with this matcher "
                                "(α = 0.5) when no --merged is given"),
    matcher_param: list[str] = MPARAM_OPT,
    normalizer: str = NORMALIZER_OPT, normalizer_param: list[str] = NPARAM_OPT,
    samples: int = typer.Option(2048, "--samples", min=1, help="test images measured"),
    data: str = typer.Option(None, "--data"), data_dir: Path = DATA_DIR_OPT,
    calibration_samples: int = CALIB_OPT,
    plot: Path = typer.Option(None, "--plot", help="PNG of E_l against relative depth"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """The vanishing feature: per-layer input-induced magnitude m_l and the ratio E_l of a
    merged (or pruned) model to its references, against relative depth."""
    from weightlab import checkpoint as ckpt_io
    from weightlab.atomic import check_writable
    from weightlab.diagnose import diagnose as run_diag
    from weightlab.errors import UsageError
    from weightlab.merging import check_compatible
    from weightlab.merging import merge as run_merge

    if pruned is not None and (merged is not None or len(checkpoints) != 1):
        raise UsageError("--pruned takes exactly one original checkpoint and no --merged")
    if pruned is None and len(checkpoints) < 2:
        raise UsageError("diagnose needs two or more endpoints (merging) or ORIGINAL --pruned P")
    if plot is not None:
        check_writable(plot, force)
    target_path = pruned or merged
    on_the_fly = target_path is None
    loaded, m, n, bundle, calib, graph = _setup(
        checkpoints, (matcher or "identity") if on_the_fly else None, matcher_param,
        normalizer if on_the_fly else None, normalizer_param, data, data_dir, device,
        calibration_samples, need_data=True)
    refs = loaded.models
    if on_the_fly:
        w = [1.0 / len(refs)] * len(refs)
        target = run_merge(refs, w, matcher=m, graph=graph, match_data=calib, normalizer=n,
                           calibration=calib).model
        label = f"merged ({matcher or 'identity'}{' + ' + normalizer if normalizer else ''})"
    else:
        target, tck = ckpt_io.load_model(target_path, loaded.device)
        check_compatible([loaded.ckpts[0].state, tck.state], [str(checkpoints[0]),
                                                              str(target_path)])
        label = "pruned" if pruned else "merged"
    test = bundle.loader("test", batch_size=500)
    res = run_diag(refs, target, test, input_shape=loaded.ckpts[0].model["input_shape"],
                   samples=samples, labels=[str(p) for p in checkpoints])
    res["target_label"] = label
    res.update({"model": loaded.ckpts[0].model["name"], "data": bundle.name,
                "target_path": str(target_path) if target_path else None,
                "matcher": matcher if on_the_fly else None,
                "normalizer": normalizer if on_the_fly else None})
    if plot is not None:
        _plot_ratio(plot, res)
    if json_out:
        print_json(res)
        return
    rows = []
    for i, layer in enumerate(res["layers"]):
        rows.append([layer, f"{res['relative_depth'][i]:.2f}",
                     *[r["m"][i] for r in res["references"]], res["target"]["m"][i],
                     res["ratio"][i]])
    refs_cols = [f"m ({Path(p).name})" for p in checkpoints]
    table(f"vanishing feature: {label}", ["layer", "depth", *refs_cols, f"m ({label})", "E_l"],
          rows)
    lg = [[lbl, r["logit_norm"], r["logit_input_norm"], r["logit_offset_norm"]]
          for lbl, r in zip([*map(str, checkpoints), label], [*res["references"], res["target"]])]
    table("logits: f(x) against f(0)", ["model", "mean ‖f(x)‖", "mean ‖f(x) − f(0)‖", "‖f(0)‖"],
          lg)
    if "bias_split" in res:
        bs = res["bias_split"]["target"]
        table("linear network: input- vs bias-induced parts (target)",
              ["layer", "input-induced", "bias-induced"],
              [[layer, a, b] for layer, a, b in zip(res["layers"], bs["input_induced"],
                                                    bs["bias_induced"])])
    if plot is not None:
        info(f"wrote {plot}")


def _plot_ratio(path: Path, res: dict) -> None:
    from weightlab.plotting import diagnose_figure

    diagnose_figure([res], path)


def flops(
    target: str = typer.Argument(..., help="a checkpoint file or a model name"),
    input_shape: str = typer.Option(None, "--input-shape", help="C,H,W (default: the "
                                    "checkpoint's, else 3,32,32 for CIFAR models, 3,224,224 "
                                    "for ImageNet models)"),
    num_classes: int = typer.Option(10, "--num-classes"),
    json_out: bool = JSON_OPT,
):
    """Parameters and FLOPs per layer and in total, dense and non-zero (sparse models)."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import plugins
    from weightlab.errors import UsageError
    from weightlab.flops import count

    masks = None
    if Path(target).suffix == ".safetensors" or Path(target).is_file():
        net, ck = ckpt_io.load_model(Path(target))
        shape = ck.model["input_shape"]
        masks = ck.masks
    else:
        comp = plugins.registry().create("models", target)
        shape = list(comp.default_input_shape)
        net = comp.build(shape, num_classes)
    if input_shape:
        try:
            shape = [int(v) for v in input_shape.split(",")]
        except ValueError:
            raise UsageError(f"--input-shape {input_shape!r}: expected C,H,W") from None
    res = count(net, shape, masks)
    if json_out:
        print_json(res)
        return
    table(f"FLOPs of {target} at {'×'.join(map(str, shape))}",
          ["layer", "type", "params", "non-zero params", "MACs", "non-zero MACs"],
          [[r["layer"], r["type"], r["params"], r["nonzero_params"], r["macs"],
            r["nonzero_macs"]] for r in res["layers"]])
    table("total", ["params", "non-zero params", "MACs", "FLOPs", "non-zero FLOPs"],
          [[res["params"], res["nonzero_params"], res["macs"], res["flops"],
            res["nonzero_flops"]]])


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)
    app.command("interpolate")(interpolate)
    app.command("diagnose")(diagnose)
    app.command("flops")(flops)
