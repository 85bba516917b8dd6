"""The zipit plugin's command ``weightlab pfm``, added through ``weightlab_register_commands``:
a thin wrapper over :func:`weightlab_zipit.ops.pfm`."""

from __future__ import annotations

from pathlib import Path

import typer
from weightlab.console import (
    DATA_DIR_OPT,
    DEVICE_OPT,
    FORCE_OPT,
    JSON_OPT,
    fmt,
    info,
    pct,
    print_json,
    table,
)


def pfm(
    model_a: Path = typer.Argument(..., help="first model (the merged space is its space)"),
    model_b: Path = typer.Argument(..., help="second model"),
    matcher: str = typer.Option("zipit", "--matcher", help="zipit, cca, weight, activation, "
                                "identity, …"),
    matcher_param: list[str] = typer.Option(None, "--matcher-param",
                                            help="matcher parameter key=value (repeatable)"),
    normalizer: str = typer.Option(None, "--normalizer", help="reset_bn (BatchNorm models), "
                                   "repair, rescale, bias_calibration (default: none)"),
    normalizer_param: list[str] = typer.Option(None, "--normalizer-param",
                                               help="normalizer parameter key=value"),
    sweep: bool = typer.Option(False, "--sweep", help="k = 0 … L−1 (the default without --k)"),
    k: int = typer.Option(None, "--k", min=0, help="preserve only the first K conv/linear "
                          "layers (0 = fully merged, L = ensemble)"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoints')"),
    data_dir: Path = DATA_DIR_OPT,
    calibration_samples: int = typer.Option(4096, "--calibration-samples", min=1,
                                            help="training images for the matcher and the "
                                            "normalizer"),
    out: Path = typer.Option(None, "--out", "-o", help="with --k: write the partially merged "
                             "model (a checkpoint 'weightlab evaluate' can load); with "
                             "--executor: the run directory (step records in OUT/steps/)"),
    plot: Path = typer.Option(None, "--plot", help="PNG of accuracy against k and FLOPs"),
    executor: str = typer.Option(None, "--executor", help="with --sweep: one step per k on "
                                 "local, ray, slurm … each recomputing the alignment (default: "
                                 "in this process, one alignment for all k)"),
    executor_param: list[str] = typer.Option(None, "--executor-param", help="executor "
                                             "parameter key=value"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """Preserve-first merging: keep the first k conv/linear layers of both models, average
    their aligned features at the merge point, run the merged remainder. For each k: test
    loss and accuracy (after the normalizer), parameters and FLOPs relative to one model
    (preserved layers count twice), next to both models and their logit ensemble."""
    from weightlab.progress import StepBar

    from weightlab_zipit.ops import pfm as run

    bar = StepBar("pfm", 1 if k is not None else None)
    try:
        res = run(model_a, model_b, matcher=matcher, matcher_param=matcher_param,
                  normalizer=normalizer, normalizer_param=normalizer_param, sweep=sweep, k=k,
                  data=data, data_dir=data_dir, calibration_samples=calibration_samples,
                  out=out, plot=plot, device=device, force=force, executor=executor,
                  executor_param=executor_param, log=info,
                  on_step=lambda _k: bar.advance()).to_json()
    finally:
        bar.stop()
    if json_out:
        print_json(res)
        return
    m, n, n_layers = res["matcher"], res["normalizer"], res["layers"]
    label = (m["name"] if m else "identity") + (f" + {n['name']}" if n else "")
    table(f"preserve-first merging ({label}), {n_layers} layers",
          ["k", "preserved up to", "loss", "top-1", "params ×", "FLOPs ×", "extra params",
           "extra FLOPs"],
          [[r["k"], r["preserved"] or "(none: fully merged)", r["loss"], pct(r["top1"]),
            f"{r['params_ratio']:.3f}", f"{r['flops_ratio']:.3f}", r["extra_params"],
            r["extra_flops"]] for r in res["rows"]])
    table("references", ["model", "loss", "top-1", "params", "FLOPs"],
          [[r["model"], r["loss"], pct(r["top1"]), fmt(r["params"]), fmt(r["flops"])]
           for r in res["references"]])
    for path in (out if not executor else None, plot):
        if path is not None:
            info(f"wrote {path}")




def register(app: typer.Typer) -> None:
    app.command("pfm")(pfm)
