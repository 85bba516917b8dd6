"""``weightlab evaluate CKPT --data NAME``."""

from __future__ import annotations

from pathlib import Path

import typer

from weightlab_cli.common import DATA_DIR_OPT, DEVICE_OPT, JSON_OPT, pct, print_json, table


def evaluate(
    checkpoints: list[Path] = typer.Argument(..., help="checkpoint files"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoint's)"),
    data_dir: Path = DATA_DIR_OPT,
    split: str = typer.Option("test", "--split", help="test, train or heldout"),
    batch_size: int = typer.Option(1000, "--batch-size"),
    device: str = DEVICE_OPT,
    json_out: bool = JSON_OPT,
):
    """Loss, top-1 and top-5 of each checkpoint, with its sparsity."""
    from weightlab.ops import evaluate as run

    rows = run(checkpoints, data=data, data_dir=data_dir, split=split, batch_size=batch_size,
               device=device).to_json()
    if json_out:
        print_json(rows)
        return
    table("evaluation", ["checkpoint", "data", "loss", "top-1", "top-5", "sparsity"],
          [[r["checkpoint"], f"{r['data']}/{split}", r["loss"], pct(r["top1"]), pct(r["top5"]),
            pct(r["sparsity"])] for r in rows])
    for r in rows:
        if r["layer_sparsity"]:
            table(f"sparsity per layer: {r['checkpoint']}", ["parameter", "sparsity"],
                  [[k, pct(v)] for k, v in r["layer_sparsity"].items()])
