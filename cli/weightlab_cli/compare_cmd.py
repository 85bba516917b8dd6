"""``weightlab compare``: every matcher × normalizer on the same models (merging), or every
pruner × sparsity × normalizer (pruning), one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def compare(
    checkpoints: list[Path] = typer.Argument(..., help="checkpoints of one architecture: two "
                                             "or more to merge, one or more to prune"),
    matchers: str = typer.Option(None, "--matchers", help="comma list of matchers to merge "
                                 "with (default: identity,weight,activation)"),
    pruners: str = typer.Option(None, "--pruners", help="comma list of pruners: prune "
                                "one-shot instead of merging"),
    sparsities: str = typer.Option(None, "--sparsities", help="with --pruners: comma list of "
                                   "fractions of zeros in [0, 1) and N:M patterns, e.g. "
                                   "0.5,0.9,2:4"),
    normalizers: str = typer.Option("none", "--normalizers",
                                    help="comma list of normalizers (none: no correction; "
                                         "after pruning: against the dense model)"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoints')"),
    data_dir: Path = DATA_DIR_OPT,
    calibration_samples: int = typer.Option(None, "--calibration-samples", min=1,
                                            help="training images for data-driven matchers, "
                                                 "pruners and normalizers (default: 4096 "
                                                 "merging, 2000 pruning)"),
    plot: Path = typer.Option(None, "--plot", help="write a plot: merged top-1 per "
                              "combination, or top-1 against sparsity per pruner"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """Compare methods on the same models and data in one table: merge with every matcher ×
    normalizer (equal weights; merged top-1 and loss, the loss barrier, seconds), or with
    --pruners and --sparsities prune one-shot with every pruner × sparsity × normalizer
    (achieved sparsity, top-1 and loss, the drop from dense, seconds; the mean and standard
    deviation over several checkpoints)."""
    from weightlab.ops import compare as run

    bar = _bar(checkpoints, pruners, sparsities, normalizers) if pruners else None
    try:
        res = run(checkpoints, matchers=matchers, pruners=pruners, sparsities=sparsities,
                  normalizers=normalizers, data=data, data_dir=data_dir,
                  calibration_samples=calibration_samples, plot=plot, device=device,
                  force=force, on_result=(lambda row: bar.advance()) if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    if json_out:
        print_json(res.to_json())
        return
    if res["mode"] == "pruning":
        _print_pruning(res.to_json())
    else:
        _print_merging(res.to_json())
    if plot is not None:
        info(f"wrote {plot}")


def _bar(checkpoints: list[Path], pruners: str, sparsities: str | None, normalizers: str):
    from weightlab.progress import StepBar

    def count(text: str | None) -> int:
        return len([v for v in (text or "").split(",") if v.strip()])

    total = len(checkpoints) * count(pruners) * count(sparsities) * max(count(normalizers), 1)
    return StepBar("compare", total, unit="run") if total else None


def _print_merging(res: dict[str, Any]) -> None:
    ends = ", ".join(pct(e["top1"]) for e in res["endpoints"])
    table(f"merging {len(res['checkpoints'])} models (endpoints {ends})",
          ["matcher", "normalizer", "top-1", "loss", "loss barrier", "seconds"],
          [[r["matcher"], r["normalizer"], pct(r["top1"]) if r["top1"] is not None else
            r["error"], r["loss"], r["barrier"], r["seconds"]] for r in res["rows"]])


def _print_pruning(res: dict[str, Any]) -> None:
    k = len(res["checkpoints"])
    dense = ", ".join(pct(d["top1"]) for d in res["dense"])
    title = (f"one-shot pruning of {'1 model' if k == 1 else f'{k} models (mean, ± std)'}, "
             f"dense {dense}")
    spread = k > 1
    cols = ["pruner", "sparsity", "normalizer", "achieved", "top-1"] + (["±"] if spread else [])
    cols += ["loss"] + (["±"] if spread else []) + ["drop (points)", "seconds"]
    rows = []
    for r in res["rows"]:
        if r["error"] is not None:
            rows.append([r["pruner"], r["sparsity"], r["normalizer"], None, r["error"]]
                        + [None] * (len(cols) - 5))
            continue
        row = [r["pruner"], r["sparsity"], r["normalizer"], pct(r["achieved"]), pct(r["top1"])]
        row += [f"{100 * r['top1_std']:.2f}"] if spread else []
        row += [r["loss"]] + ([f"{r['loss_std']:.2g}"] if spread else [])
        row += [f"{100 * r['drop']:.2f}", r["seconds"]]
        rows.append(row)
    table(title, cols, rows)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
