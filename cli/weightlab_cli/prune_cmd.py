"""``weightlab prune CKPT --pruner NAME --sparsity S [--normalizer N] -o OUT`` (or ``--sweep``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from weightlab_cli.common import (
    DATA_DIR_OPT,
    DEVICE_OPT,
    FORCE_OPT,
    JSON_OPT,
    PARAM_OPT,
    info,
    pct,
    print_json,
    table,
)


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)


def prune(
    checkpoint: Path = typer.Argument(..., help="dense (or already sparse) checkpoint"),
    pruner: str = typer.Option(..., "--pruner", help="pruner name (weightlab list pruners)"),
    sparsity: float = typer.Option(None, "--sparsity", help="target fraction of zeros over the "
                                                            "pruned weights, in [0, 1)"),
    sweep: str = typer.Option(None, "--sweep", help="comma list of sparsities instead of "
                                                    "--sparsity; -o is then a directory"),
    pruner_param: list[str] = PARAM_OPT,
    normalizer: str = typer.Option(None, "--normalizer", help="re-normalize after pruning with "
                                   "the dense model as reference: reset_bn, repair, rescale …"),
    normalizer_param: list[str] = typer.Option(None, "--normalizer-param",
                                               help="normalizer parameter key=value"),
    calibration_samples: int = typer.Option(2000, "--calibration-samples", min=1,
                                            help="training images for the normalizer (and at "
                                                 "least this many for a data-driven pruner)"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoint's)"),
    data_dir: Path = DATA_DIR_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="output checkpoint (directory with "
                                                      "--sweep)"),
    batch_size: int = typer.Option(1000, "--batch-size", min=1, help="evaluation batch size"),
    executor: str = typer.Option(None, "--executor", help="with --sweep: one step per sparsity "
                                 "on local, ray, slurm … (default: in this process, the "
                                 "pruner's analysis shared)"),
    executor_param: list[str] = typer.Option(None, "--executor-param", help="executor "
                                             "parameter key=value"),
    device: str = DEVICE_OPT,
    force: bool = FORCE_OPT,
    json_out: bool = JSON_OPT,
):
    """One-shot pruning: prune, evaluate before and after, re-normalize, evaluate again, and
    write the sparse checkpoint with its masks. With --sweep: a table and a plot over
    sparsities; statistics that do not depend on the sparsity (the Fisher of woodfisher and
    diag_fisher) are computed once for the whole sweep."""
    from weightlab.ops import prune as run
    from weightlab.progress import StepBar

    n = len([v for v in sweep.split(",") if v.strip()]) if sweep else 0
    bar = StepBar("sweep", n) if n else None
    try:
        res = run(checkpoint, pruner, sparsity=sparsity, sweep=sweep,
                  pruner_param=pruner_param, normalizer=normalizer,
                  normalizer_param=normalizer_param, calibration_samples=calibration_samples,
                  data=data, data_dir=data_dir, out=out, batch_size=batch_size, device=device,
                  force=force, executor=executor, executor_param=executor_param, log=info,
                  on_result=(lambda s: bar.advance()) if bar else None)
    finally:
        if bar is not None:
            bar.stop()
    if sweep is None:
        _print_one(res.to_json(), json_out)
    else:
        _print_sweep(res.records, out, json_out)


def _metric_rows(rec: dict) -> list[list[Any]]:
    rows = []
    for key, label in (("dense", "dense"), ("pruned", "pruned"),
                       ("normalized", f"pruned + {rec.get('normalizer')}")):
        if rec.get(key):
            m = rec[key]
            rows.append([label, m["loss"], pct(m["top1"]), pct(m["top5"])])
    return rows


def _print_one(rec: dict, json_out: bool) -> None:
    if json_out:
        print_json(rec)
        return
    table(f"{rec['pruner']} → {pct(rec['sparsity'])} sparse ({rec['checkpoint']})",
          ["model", "loss", "top-1", "top-5"], _metric_rows(rec))
    table("sparsity per layer", ["parameter", "sparsity"],
          [[k, pct(v)] for k, v in rec["layer_sparsity"].items()])
    report = rec.get("pruner_report") or {}
    if report.get("stages"):
        table("pruner stages", ["stage", "seconds", "peak memory", "added memory"],
              [[k, v["seconds"], _mib(v["peak_bytes"]), _mib(v["extra_bytes"])]
               for k, v in report["stages"].items()])
    if report.get("steps"):
        table("pruning steps", ["step", "target", "sparsity", "seconds"],
              [[i, f"{st['sparsity_target']:.4g}", pct(st["sparsity"]),
                sum(v["seconds"] for v in st["stages"].values())]
               for i, st in enumerate(report["steps"], 1)])
    if report.get("plan"):
        p = report["plan"]
        mode = (f"streamed in {p['groups']} groups ({p['passes']} gradient passes)"
                if p.get("mode") == "streamed" else "resident")
        info(f"plan: {p['num_blocks']} blocks of {p['block_size']} ({_mib(p['blocks_bytes'])}, "
             f"{mode}), "
             f"gradients in chunks of {p['grad_chunk']} (all at once would be "
             f"{_mib(p['grads_bytes_if_stored'])}); budget {_mib(p['budget_bytes'])} "
             f"({p['budget_from']})")
    if rec.get("unpruned_by_normalizer"):
        info(f"the normalizer changed {rec['unpruned_by_normalizer']} pruned weights; "
             f"masks re-applied")


def _print_sweep(records: list[dict], out: Path, json_out: bool) -> None:
    if json_out:
        print_json({"directory": str(out), "plot": str(out / "sweep.png"), "records": records})
        return
    norm = records[0].get("normalizer")
    cols = ["target", "sparsity", "dense top-1", "pruned top-1"]
    cols += [f"+ {norm} top-1"] if norm else []
    rows = []
    for r in records:
        row = [f"{r['sparsity_target']:g}", pct(r["sparsity"]),
               pct(r["dense"]["top1"]) if r.get("dense") else "-",
               pct(r["pruned"]["top1"]) if r.get("pruned") else "-"]
        if norm:
            row.append(pct(r["normalized"]["top1"]) if r.get("normalized") else "-")
        rows.append(row)
    table(f"sweep: {records[0]['pruner']} ({out})", cols, rows)
    analyze_s = records[0]["seconds"].get("analyze")
    if analyze_s is not None:
        info(f"sparsity-independent statistics computed once: {analyze_s:.2f} s (then "
             f"{sum(r['seconds']['prune'] for r in records):.2f} s pruning to "
             f"{len(records)} sparsities)")
    info(f"wrote {out / 'sweep.png'} and {len(records)} checkpoints in {out}")


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"
