"""The sparse-soup plugin's commands, ``weightlab soup`` and ``weightlab sms``, added through
``weightlab_register_commands``: thin wrappers over :mod:`weightlab_sparse_soup.ops`."""

from __future__ import annotations

from pathlib import Path

import typer
from weightlab.console import (
    DATA_DIR_OPT,
    DEVICE_OPT,
    FORCE_OPT,
    JSON_OPT,
    info,
    pct,
    print_json,
    table,
)


def soup(
    checkpoints: list[Path] = typer.Argument(..., help="ingredient checkpoints (same "
                                                       "architecture and mask)"),
    method: str = typer.Option("uniform", "--method", help="uniform, greedy or any "
                               "registered ensemble (weightlab list ensembles)"),
    method_param: list[str] = typer.Option(None, "--param", "-p", help="ensemble parameter "
                                           "key=value (repeatable)"),
    out: Path = typer.Option(..., "--out", "-o", help="the soup's checkpoint"),
    data: str = typer.Option(None, "--data", help="dataset for evaluation, BatchNorm "
                                                  "statistics and greedy selection (default: "
                                                  "the checkpoints', loaded when needed)"),
    data_dir: Path = DATA_DIR_OPT,
    heldout: int = typer.Option(0, "--heldout", help="training images held out for greedy "
                                                     "selection (never the test set)"),
    bn_samples: int = typer.Option(5000, "--bn-samples", help="training images to recompute "
                                                              "BatchNorm statistics"),
    device: str = DEVICE_OPT,
    force: bool = FORCE_OPT,
    json_out: bool = JSON_OPT,
):
    """Average ingredients trained elsewhere into one model (uniform or greedy soup); with
    data, compare it with each ingredient and with their logit ensemble."""
    from weightlab_sparse_soup.ops import soup as run

    res = run(checkpoints, method=method, out=out, method_param=method_param, data=data,
              data_dir=data_dir, heldout=heldout, bn_samples=bn_samples, device=device,
              force=force).to_json()
    if json_out:
        print_json(res)
        return
    info(f"{res['method']} soup of {len(res['chosen'])}/{len(checkpoints)} ingredients "
         f"{res['chosen']} → {out}")
    if res["rows"]:
        table(f"soup on {res['data']}", ["model", "sparsity", "test top-1", "test loss",
                                         "held-out top-1"],
              [[r["model"], pct(r["sparsity"]), pct(r["test"]["top1"]), r["test"]["loss"],
                pct(r["heldout"]["top1"]) if "heldout" in r else None] for r in res["rows"]])


def sms(
    checkpoint: Path = typer.Argument(..., help="the dense (or already sparse) trained model"),
    goal_sparsity: float = typer.Option(0.9, "--goal-sparsity", help="final sparsity"),
    phases: int = typer.Option(3, "--phases", help="prune–retrain cycles"),
    ingredients: int = typer.Option(4, "--ingredients", help="models retrained per phase"),
    vary: str = typer.Option("seed", "--vary", help="seed|weight_decay|retrain_length|"
                                                    "learning_rate"),
    values: str = typer.Option(None, "--values", help="comma list, one value per ingredient "
                                                      "(seed default: s, s+1, …)"),
    retrain_epochs: int = typer.Option(2, "--retrain-epochs", help="epochs per ingredient and "
                                                                   "phase"),
    schedule: str = typer.Option("LLR", "--schedule", help="FT|LRW|SLR|CLR|LLR|ALLR"),
    ensemble: str = typer.Option("uniform", "--ensemble", help="uniform|greedy"),
    data: str = typer.Option(None, "--data", help="dataset (default: the checkpoint's)"),
    data_dir: Path = DATA_DIR_OPT,
    heldout: int = typer.Option(0, "--heldout", help="training images held out (greedy)"),
    out: Path = typer.Option(None, "--out", "-o", help="run directory (default runs/sms-"
                                                       "<checkpoint>)"),
    phase: int = typer.Option(None, "--phase", help="run only phase i (reads phase i-1's "
                                                    "soup from the run directory)"),
    workers: int = typer.Option(1, "--workers", min=1, help="ingredients retrained at once "
                                                            "(subprocesses)"),
    devices: str = typer.Option(None, "--devices", help="comma list, e.g. cuda:0,cuda:1 "
                                                        "(workers take them in turn)"),
    executor: str = typer.Option(None, "--executor", help="where ingredients retrain: local, "
                                 "ray, slurm (weightlab list executors)"),
    executor_param: list[str] = typer.Option(None, "--executor-param", help="executor "
                                             "parameter key=value, e.g. address=HOST:PORT"),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads per ingredient"),
    pruner: str = typer.Option("global_magnitude", "--pruner", help="registered pruner"),
    imp: bool = typer.Option(True, "--imp/--no-imp", help="plain IMP baseline with the same "
                                                          "retraining budget"),
    seed: int = typer.Option(0, "--seed", help="base seed"),
    batch_size: int = typer.Option(None, "--batch-size", help="retraining batch size"),
    train_samples: int = typer.Option(None, "--train-samples", help="retrain on a seeded "
                                                                    "subset of N images"),
    bn_samples: int = typer.Option(5000, "--bn-samples", help="images for BatchNorm "
                                                              "statistics"),
    original: list[str] = typer.Option(None, "--original", help="pretraining recipe key=value "
                                       "(default: the checkpoint's train header)"),
    device: str = DEVICE_OPT,
    force: bool = FORCE_OPT,
    json_out: bool = JSON_OPT,
):
    """Sparse Model Soups: per phase prune, retrain several ingredients under one mask, soup
    them and continue from the soup; compared with plain IMP, the best and mean ingredient and
    the logit ensemble. Interrupted runs resume from the last finished ingredient."""
    from weightlab_sparse_soup.ops import sms as run

    res = run(checkpoint, goal_sparsity=goal_sparsity, phases=phases, ingredients=ingredients,
              vary=vary, values=values, retrain_epochs=retrain_epochs, schedule=schedule,
              ensemble=ensemble, data=data, data_dir=data_dir, heldout=heldout, out=out,
              phase=phase, workers=workers, devices=devices, executor=executor,
              executor_param=executor_param, threads=threads, pruner=pruner, imp=imp, seed=seed,
              batch_size=batch_size, train_samples=train_samples, bn_samples=bn_samples,
              original=original, device=device, force=force, log=info)
    summary, params = res.to_json(), res.params
    if json_out:
        print_json(summary)
        return
    table(f"SMS {params.schedule}, {params.ingredients} ingredients varying {params.vary}, "
          f"{params.ensemble} soup → {res.run_dir}",
          ["phase", "model", "sparsity", "test top-1", "test loss", "held-out", "FLOPs"],
          [[r["phase"], r["model"].replace("ingredient", "ingr."), pct(r["sparsity"]),
            pct(r["test_top1"]), r["test_loss"],
            pct(r["heldout_top1"]) if r["heldout_top1"] is not None else None,
            _si(r["flops"])] for r in summary["rows"]])
    if summary.get("plot"):
        info(f"best/mean ingr. = the best (by test accuracy) and the mean ingredient; "
             f"FLOPs per image, non-zero; plot: {summary['plot']}")


def _si(n: float | None) -> str | None:
    """17664 → 17.7k, 1508478 → 1.51M (non-zero FLOPs per image)."""
    if n is None:
        return None
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:g}"


def register(app: typer.Typer) -> None:
    app.command("soup")(soup)
    app.command("sms")(sms)
