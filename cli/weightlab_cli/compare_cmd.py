"""``weightlab compare``: every matcher × normalizer on the same models, one table."""

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


def compare(
    checkpoints: list[Path] = typer.Argument(..., help="two or more checkpoints of one "
                                             "architecture"),
    matchers: str = typer.Option("identity,weight,activation", "--matchers",
                                 help="comma list of matchers"),
    normalizers: str = typer.Option("none", "--normalizers",
                                    help="comma list of normalizers (none: no correction)"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoints')"),
    data_dir: Path = DATA_DIR_OPT,
    calibration_samples: int = typer.Option(4096, "--calibration-samples", min=1,
                                            help="training images for data-driven matchers "
                                                 "and normalizers"),
    plot: Path = typer.Option(None, "--plot", help="write a bar plot of merged test top-1"),
    device: str = DEVICE_OPT, force: bool = FORCE_OPT, json_out: bool = JSON_OPT,
):
    """Merge the same models with every matcher × normalizer (equal weights, the same
    calibration and test data) and print one table: merged test top-1 and loss, the loss
    barrier, and the time each took."""
    from weightlab.ops import compare as run

    res = run(checkpoints, matchers=_names(matchers), normalizers=_names(normalizers),
              data=data, data_dir=data_dir, calibration_samples=calibration_samples,
              plot=plot, device=device, force=force)
    if json_out:
        print_json(res.to_json())
        return
    ends = ", ".join(pct(e["top1"]) for e in res["endpoints"])
    table(f"merging {len(res['checkpoints'])} models (endpoints {ends})",
          ["matcher", "normalizer", "top-1", "loss", "loss barrier", "seconds"],
          [[r["matcher"], r["normalizer"], pct(r["top1"]) if r["top1"] is not None else
            r["error"], r["loss"], r["barrier"], r["seconds"]] for r in res["rows"]])
    if plot is not None:
        info(f"wrote {plot}")


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
