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


def merge(
    checkpoints: list[Path] = typer.Argument(..., help="two or more checkpoints; all are "
                                             "aligned to the first"),
    out: Path = typer.Option(..., "--out", "-o", help="merged checkpoint to write"),
    matcher: str = typer.Option(None, "--matcher", help="alignment: identity, weight, "
                                "activation, zipit, cca, … (default: weight; none with --base)"),
    matcher_param: list[str] = MPARAM_OPT,
    normalizer: str = NORMALIZER_OPT, normalizer_param: list[str] = NPARAM_OPT,
    base: Path = typer.Option(None, "--base", help="the checkpoint the models were fine-tuned "
                              "from: merge their task vectors θ_k − θ_base with --method"),
    method: str = typer.Option(None, "--method", help="task-vector merge method (with --base):"
                               " task_arithmetic, ties, dare, model_stock, slerp"),
    method_param: list[str] = typer.Option(None, "--method-param", "--param",
                                           help="merge method parameter key=value"),
    alpha: float = typer.Option(None, "--alpha", help="weight of the second model (two models)"),
    weights: str = typer.Option(None, "--weights", help="comma list of per-model weights"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoints')"),
    data_dir: Path = DATA_DIR_OPT, calibration_samples: int = CALIB_OPT,
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                  help="report test accuracy of inputs and result"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """Align N models to the first, average them, optionally re-normalize; write a plain
    checkpoint of the same architecture with the provenance in its header. With --base
    (models fine-tuned from one checkpoint), --method combines their task vectors instead."""
    from weightlab.ops import merge as run

    res = run(checkpoints, out=out, matcher=matcher, matcher_param=matcher_param,
              normalizer=normalizer, normalizer_param=normalizer_param, base=base,
              method=method, method_param=method_param, alpha=alpha,
              weights=weights, data=data, data_dir=data_dir,
              calibration_samples=calibration_samples, evaluate=evaluate, device=device,
              force=force)
    if json_out:
        print_json(res.to_json())
        return
    rows = res["evaluation"]
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
    normalize_endpoints: bool = typer.Option(True, "--normalize-endpoints/--raw-endpoints",
                                             help="apply the normalizer at α = 0 and 1 too "
                                                  "(--raw-endpoints: as the seed code)"),
    plot: Path = typer.Option(None, "--plot", help="PNG to write (default: none)"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """Loss and top-1 along θ(α) = (1−α)θ_A + α·align(θ_B) on train and test, with the loss
    and accuracy barriers (the seed's, against the endpoints' mean, and Git Re-Basin's,
    against the straight line)."""
    from weightlab.ops import interpolate as run

    res = run(model_a, model_b, matcher=matcher, matcher_param=matcher_param,
              normalizer=normalizer, normalizer_param=normalizer_param, points=points,
              splits=splits, train_samples=train_samples, data=data, data_dir=data_dir,
              calibration_samples=calibration_samples, normalize_endpoints=normalize_endpoints,
              plot=plot, device=device, force=force)
    data_ = res.to_json()
    if json_out:
        print_json(data_)
        return
    wanted = data_["splits"]
    cols = ["α"] + [f"{s} {k}" for s in wanted for k in ("loss", "top-1")]
    rows = [[f"{a:.2f}"] + [v for s in wanted for v in (data_[s]["loss"][i],
                                                         pct(data_[s]["top1"][i]))]
            for i, a in enumerate(data_["alpha"])]
    table(f"interpolation ({matcher}{' + ' + normalizer if normalizer else ''})", cols, rows)
    table("barriers (seed: vs the endpoints' mean; line: Git Re-Basin's, vs the straight "
          "line)", ["split", "loss (nats)", "accuracy", "loss, line", "accuracy, line"],
          [[s, data_[s]["loss_barrier"], pct(data_[s]["acc_barrier"]),
            data_[s]["loss_barrier_line"], pct(data_[s]["acc_barrier_line"])]
           for s in wanted])
    if normalizer:
        info("endpoints " + ("normalized too" if data_["endpoints_normalized"]
                             else "evaluated raw (--raw-endpoints)"))
    if plot is not None:
        info(f"wrote {plot}")


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
    tap: str = typer.Option("all", "--tap", help="where features are read: all (every "
                            "conv/linear/norm output, as the VF notebooks), layer (conv/"
                            "linear outputs), norm (after the norm reading a layer)"),
    data: str = typer.Option(None, "--data"), data_dir: Path = DATA_DIR_OPT,
    calibration_samples: int = CALIB_OPT,
    plot: Path = typer.Option(None, "--plot", help="PNG of E_l against relative depth"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """The vanishing feature: per-layer input-induced magnitude m_l and the ratio E_l of a
    merged (or pruned) model to its references, against relative depth."""
    from weightlab.ops import diagnose as run

    res = run(checkpoints, merged=merged, pruned=pruned, matcher=matcher,
              matcher_param=matcher_param, normalizer=normalizer,
              normalizer_param=normalizer_param, samples=samples, tap=tap, data=data,
              data_dir=data_dir,
              calibration_samples=calibration_samples, plot=plot, device=device, force=force)
    res = res.to_json()
    if json_out:
        print_json(res)
        return
    label = res["target_label"]
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


def flops(
    target: str = typer.Argument(..., help="a checkpoint file or a model name"),
    input_shape: str = typer.Option(None, "--input-shape", help="C,H,W (default: the "
                                    "checkpoint's, else 3,32,32 for CIFAR models, 3,224,224 "
                                    "for ImageNet models)"),
    num_classes: int = typer.Option(10, "--num-classes"),
    json_out: bool = JSON_OPT,
):
    """Parameters and FLOPs per layer and in total, dense and non-zero (sparse models)."""
    from weightlab.ops import flops as run

    res = run(target, input_shape=input_shape, num_classes=num_classes).to_json()
    if json_out:
        print_json(res)
        return
    shape = res.get("input_shape") or input_shape
    where = f" at {'×'.join(map(str, shape))}" if shape else ""
    table(f"FLOPs of {target}{where}",
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
