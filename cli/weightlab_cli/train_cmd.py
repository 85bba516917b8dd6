"""``weightlab train MODEL --data NAME [--pair | --models K]`` or ``weightlab train --recipe
NAME``; runs data-parallel under ``torchrun`` (docs/training.md)."""

from __future__ import annotations

import os
from pathlib import Path

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


def train(
    model: str = typer.Argument(None, help="model name, e.g. cifar_resnet20, mlp (or from "
                                           "--recipe)"),
    recipe: str = typer.Option(None, "--recipe", help="a recipe name from recipes/train "
                                                      "(vf-cifar10-resnet20, …) or a TOML path"),
    data: str = typer.Option(None, "--data", help="dataset name (default: the recipe's, else "
                                                  "digits)"),
    data_dir: Path = DATA_DIR_OPT,
    out: Path = typer.Option(None, "--out", "-o", help="run directory (default runs/<model>-"
                                                       "<data>-s<seed>)"),
    pair: bool = typer.Option(False, "--pair", help="train two models (seeds s, s+1)"),
    models: int = typer.Option(None, "--models", min=1, help="train K models side by side"),
    seeds: str = typer.Option(None, "--seeds", help="one model per seed, e.g. 0,5,9 (instead of "
                              "--seed with --models or --pair)"),
    same_init: bool = typer.Option(None, "--same-init/--diff-init",
                                   help="all models start from one init (default: different)"),
    epochs: int = typer.Option(None, "--epochs", help="training epochs"),
    batch_size: int = typer.Option(None, "--batch-size", help="images per step"),
    lr: float = typer.Option(None, "--lr", help="peak learning rate"),
    schedule: str = typer.Option(None, "--schedule", help="multistep|cosine|linear|onecycle|"
                                                          "constant"),
    seed: int = typer.Option(None, "--seed", help="seed of the first model"),
    save_epochs: str = typer.Option(None, "--save-epochs", help="comma list of epochs to keep"),
    train_param: list[str] = typer.Option(None, "--train-param", help="any training setting "
                                          "key=value (weight_decay, milestones, warmup_epochs …)"),
    model_param: list[str] = PARAM_OPT,
    data_param: list[str] = typer.Option(None, "--data-param", help="dataset parameter "
                                         "key=value (normalization=cifar10: the seed's "
                                         "CIFAR-100 inputs)"),
    heldout: int = typer.Option(None, "--heldout", help="training images held out (for later "
                                                        "calibration or greedy soups)"),
    lmc_freq: float = typer.Option(None, "--lmc-freq", help="measure linear mode connectivity "
                                   "of models 1 and 2 every this fraction of training"),
    lmc_points: int = typer.Option(None, "--lmc-points", help="α values per LMC curve (11)"),
    lmc_matcher: str = typer.Option(None, "--lmc-matcher", help="align model 2 first (weight, "
                                    "activation, …; default identity)"),
    lmc_normalizer: str = typer.Option(None, "--lmc-normalizer", help="reset_bn, repair, "
                                       "rescale … applied to each interpolated model"),
    lmc_param: list[str] = typer.Option(None, "--lmc-param", help="LMC setting key=value "
                                        "(train_samples, test_samples, calibration_samples)"),
    batched: bool = typer.Option(None, "--batched/--no-batched", help="K models in one vmapped "
                                 "step (default: on CUDA when the model supports it)"),
    compile_: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the "
                                  "training forward"),
    cuda_graphs: bool = typer.Option(None, "--cuda-graphs", help="replay forward/backward as "
                                     "CUDA graphs (CUDA only)"),
    amp: str = typer.Option(None, "--amp", help="bf16 autocast: auto (CUDA), on, off"),
    channels_last: str = typer.Option(None, "--channels-last", help="auto (CUDA and CPU), on, off"),
    device: str = DEVICE_OPT,
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run (SIGTERM "
                                "or Ctrl-C stops after the current step with a resume state)"),
    resume_every: int = typer.Option(0, "--resume-every", min=0, help="also write the resume "
                                     "state every N iterations (default: at epoch ends)"),
    wandb_mode: str = typer.Option("disabled", "--wandb-mode", help="online|offline|disabled"),
    force: bool = FORCE_OPT,
    download: bool = typer.Option(False, "--download", help="fetch the dataset if missing"),
    executor: str = typer.Option(None, "--executor", help="train each model as its own step on "
                                 "this executor (local, ray, slurm …: weightlab list "
                                 "executors); default: side by side in this process"),
    executor_param: list[str] = typer.Option(None, "--executor-param", help="executor "
                                             "parameter key=value (address=HOST:PORT, "
                                             "workers=2, partition=gpu …)"),
    json_out: bool = JSON_OPT,
):
    """Train one model, a pair, or K models; checkpoints and metrics.jsonl go to the run
    directory."""
    from weightlab.errors import UsageError
    from weightlab.ops import train as run

    if not model and not recipe:
        raise UsageError("Missing argument 'MODEL': name a model or a --recipe")

    main = int(os.environ.get("RANK", "0")) == 0
    res = run(model, recipe=recipe, data=data, data_dir=data_dir, out=out, pair=pair,
              models=models, seeds=seeds, same_init=same_init, epochs=epochs,
              batch_size=batch_size, lr=lr,
              schedule=schedule, seed=seed, save_epochs=save_epochs, train_param=train_param,
              model_param=model_param, data_param=data_param, heldout=heldout,
              lmc_freq=lmc_freq,
              lmc_points=lmc_points, lmc_matcher=lmc_matcher, lmc_normalizer=lmc_normalizer,
              lmc_param=lmc_param, batched=batched, compile_=compile_, cuda_graphs=cuda_graphs,
              amp=amp, channels_last=channels_last, device=device, resume=resume,
              resume_every=resume_every, wandb_mode=wandb_mode, force=force,
              download=download, executor=executor, executor_param=executor_param,
              log=info)
    if main:
        _report(res.to_json(), json_out)


def _report(data, json_out: bool) -> None:
    if json_out:
        print_json(data)
        return
    rows, lmc = (data["models"], data["lmc"]) if isinstance(data, dict) else (data, [])
    table("trained", ["checkpoint", "test top-1", "test loss"],
          [[r["model"], pct(r["test_top1"]), r["test_loss"]] for r in rows])
    if lmc:
        table("linear mode connectivity during training (models 1 ↔ 2)",
              ["fraction", "iter", "test loss barrier", "test acc barrier", "test top-1 at α=½"],
              [[f"{r['fraction']:.2f}", r["iter"], r.get("test_loss_barrier"),
                pct(r.get("test_acc_barrier")), pct(r.get("test_mid_top1"))] for r in lmc])
