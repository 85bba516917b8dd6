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

SWEEP_FILES = ("sweep.json", "sweep.png")


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
    device: str = DEVICE_OPT,
    force: bool = FORCE_OPT,
    json_out: bool = JSON_OPT,
):
    """One-shot pruning: prune, evaluate before and after, re-normalize, evaluate again, and
    write the sparse checkpoint with its masks. With --sweep: a table and a plot over
    sparsities; statistics that do not depend on the sparsity (the Fisher of woodfisher and
    diag_fisher) are computed once for the whole sweep."""
    import json

    from weightlab import checkpoint as ckpt_io
    from weightlab import device as devmod
    from weightlab import plugins, pruning
    from weightlab.atomic import write_text
    from weightlab.data.bundle import load_data
    from weightlab.errors import UsageError
    from weightlab.params import parse_assignments
    from weightlab.progress import StepBar

    sparsities = _sparsities(sparsity, sweep)
    _check_outputs(out, sweep is not None, sparsities, force)
    reg = plugins.registry()
    pruner_values = parse_assignments(pruner_param)
    first = reg.create("pruners", pruner, pruner_values)
    norm = (reg.create("normalizers", normalizer, parse_assignments(normalizer_param))
            if normalizer else None)
    dev = devmod.resolve(device)
    dense, ck = ckpt_io.load_model(checkpoint, dev)
    name = data or ck.data.get("name")
    needs = [f"pruner {first.name!r}"] if first.needs_data else []
    needs += [f"normalizer {norm.name!r}"] if norm is not None and norm.needs_data else []
    if not name and needs:
        raise UsageError(f"{checkpoint}: {' and '.join(needs)} need data but the checkpoint "
                         f"names no dataset; pass --data NAME (and --data-dir)")
    loaders: dict[str, Any] = {}
    if name:
        bundle = load_data(name, data_dir=data_dir, device=dev,
                           params=ck.data.get("params") if not data else None)
        wanted = max(calibration_samples, getattr(first.params, "samples", 0))
        loaders = {"evaluate_on": bundle.loader("test", batch_size=batch_size),
                   "calibration": bundle.loader("calibration", num_samples=calibration_samples,
                                                batch_size=500),
                   "pruner_data": bundle.loader("calibration", num_samples=wanted,
                                                batch_size=500) if first.needs_data else None}
    info(f"pruning {checkpoint} with {first.name} to {', '.join(map(str, sparsities))} on {dev}"
         + (f", then {norm.name}" if norm else ""))
    provenance = {"command": "prune", "source": str(checkpoint), "source_sha256":
                  _source_digest(checkpoint), "pruner": first.name, "params": first.params_dict(),
                  "normalizer": norm.name if norm else None,
                  "normalizer_params": norm.params_dict() if norm else None,
                  "calibration_samples": calibration_samples, "data": name, "device": dev,
                  "parent": ck.provenance}

    def save(s: float, model, masks, rec, path: Path) -> None:
        final = rec.get("normalized") or rec.get("pruned")
        metrics = {"test": final, "prune": {k: rec.get(k) for k in ("dense", "pruned",
                                                                    "normalized")}} \
            if final else {}
        new = ckpt_io.from_model(model, ck.model, masks=masks, data=ck.data or
                                 (bundle.describe() if name else {}), train=ck.train,
                                 metrics=metrics, provenance={**provenance, "sparsity": s})
        ckpt_io.save(new, path, force=force)
        rec["checkpoint"] = str(path)

    if sweep is None:
        model, masks, rec = pruning.one_shot(dense, first, sparsities[0], masks=ck.masks,
                                             normalizer=norm, **loaders)
        save(sparsities[0], model, masks, rec, out)
        _print_one(rec, json_out)
        return
    bar = StepBar("sweep", len(sparsities))

    def on_result(s, model, masks, rec):
        save(s, model, masks, rec, out / f"sparsity-{s:g}.safetensors")
        bar.advance()

    try:
        records = pruning.sweep(dense, first, sparsities, masks=ck.masks, normalizer=norm,
                                on_result=on_result, **loaders)
    finally:
        bar.stop()
    write_text(out / "sweep.json", json.dumps(records, indent=2, default=str) + "\n")
    if name:
        pruning.plot_sweep(records, out / "sweep.png",
                           title=f"{ck.model['name']} on {name}: {first.name}")
    _print_sweep(records, out, json_out)


def _sparsities(sparsity: float | None, sweep: str | None) -> list[float]:
    from weightlab.errors import UsageError

    if (sparsity is None) == (sweep is None):
        raise UsageError("pass exactly one of --sparsity S or --sweep S1,S2,…")
    if sweep is not None:
        try:
            values = [float(v) for v in sweep.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--sweep {sweep!r}: expected comma-separated numbers such as "
                             f"0.5,0.7,0.9") from None
        if not values:
            raise UsageError(f"--sweep {sweep!r}: expected at least one sparsity")
    else:
        values = [sparsity]
    for v in values:
        if not 0.0 <= v < 1.0:
            opt = "--sweep" if sweep is not None else "--sparsity"
            raise UsageError(f"{opt} {v:g}: expected a fraction of zeros in [0, 1)")
    return values


def _check_outputs(out: Path, is_sweep: bool, sparsities: list[float], force: bool) -> None:
    from weightlab.atomic import check_writable
    from weightlab.errors import UsageError

    if not is_sweep:
        if out.is_dir():
            raise UsageError(f"-o {out}: is a directory; expected a checkpoint file path "
                             f"(directories are for --sweep)")
        check_writable(out, force)
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory (--sweep writes a directory)")
    names = list(SWEEP_FILES) + [f"sparsity-{s:g}.safetensors" for s in sparsities]
    taken = [n for n in names if (out / n).exists()]
    if taken and not force:
        raise UsageError(f"{out / taken[0]} exists; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)


def _source_digest(path: Path) -> str | None:
    from weightlab.checkpoint import read_header

    return read_header(path).get("sha256")


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
