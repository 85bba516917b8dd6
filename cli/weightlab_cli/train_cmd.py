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
    json_out: bool = JSON_OPT,
):
    """Train one model, a pair, or K models; checkpoints and metrics.jsonl go to the run
    directory."""
    from weightlab import device as devmod
    from weightlab.data.bundle import load_data
    from weightlab.errors import UsageError
    from weightlab.params import build_params, parse_assignments
    from weightlab.training import recipes
    from weightlab.training.config import SpeedOptions, TrainConfig
    from weightlab.training.lmc import LMCConfig
    from weightlab.training.logging import WANDB_MODES, check_wandb
    from weightlab.training.loop import TrainJob
    from weightlab.training.loop import train as run_train

    if wandb_mode not in WANDB_MODES:
        raise UsageError(f"--wandb-mode {wandb_mode!r}: expected one of {', '.join(WANDB_MODES)}")
    check_wandb(wandb_mode)  # installed? before the banner and the run directory
    rec = recipes.load(recipe) if recipe else recipes.Recipe("", Path())
    model = model or rec.model
    if not model:
        raise UsageError("Missing argument 'MODEL': name a model or a --recipe")
    data = data or rec.data or "digits"
    values = {**rec.train, **parse_assignments(train_param)}
    for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": schedule,
                 "seed": seed, "save_epochs": save_epochs}.items():
        if v is not None:
            values[k] = v
    cfg = build_params(TrainConfig, values, prefix="train.")
    speed_values = dict(rec.speed)
    for k, v in {"amp": amp, "channels_last": channels_last, "compile": compile_,
                 "cuda_graphs": cuda_graphs,
                 "batched": None if batched is None else ("on" if batched else "off")}.items():
        if v is not None:
            speed_values[k] = v
    speed = build_params(SpeedOptions, speed_values, prefix="speed.")
    lmc_values = {**rec.lmc, **parse_assignments(lmc_param)}
    for k, v in {"freq": lmc_freq, "points": lmc_points, "matcher": lmc_matcher,
                 "normalizer": lmc_normalizer}.items():
        if v is not None:
            lmc_values[k] = v
    lmc = build_params(LMCConfig, lmc_values, prefix="lmc.") if lmc_values else None
    k_models = models or (2 if pair else rec.models or 1)
    if lmc is not None and k_models < 2:
        raise UsageError("--lmc-freq measures between models 1 and 2: add --pair or --models K")
    model_params = {**rec.model_params, **parse_assignments(model_param)}
    from weightlab import plugins

    plugins.registry().create("models", model, model_params)  # name and parameters, before data
    dev = devmod.resolve(device)
    main = int(os.environ.get("RANK", "0")) == 0
    bundle = load_data(data, data_dir=data_dir, device=dev, download=download,
                       heldout=heldout if heldout is not None else rec.heldout or 0)
    default_name = f"{rec.name}-s{cfg.seed}" if rec.name else f"{model}-{data}-s{cfg.seed}"
    run_dir = out or Path("runs") / default_name
    finals = [run_dir / f"model_{k + 1}.safetensors" for k in range(k_models)]
    if not resume and not force and any(f.exists() for f in finals):
        raise UsageError(f"{run_dir} already holds trained models; pass --force to retrain or "
                         f"--resume to continue")
    if resume and not (run_dir / "resume.pt").is_file() and main:
        info(f"[yellow]no resume state in {run_dir}; starting from scratch[/yellow]")
    same = same_init if same_init is not None else bool(rec.same_init)
    job = TrainJob(model, model_params, bundle, cfg, run_dir, num_models=k_models,
                   same_init=same, device=dev, wandb_mode=wandb_mode, speed=speed, lmc=lmc,
                   resume_every=resume_every)
    if main:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        where = f"{world} processes" if world > 1 else dev
        info(f"training {k_models} × {model} on {bundle.name} ({len(bundle.train_idx)} images) "
             f"for {cfg.epochs} epochs on {where} → {run_dir}")
    ckpts = run_train(job, resume=resume, force=force)
    if main:
        _report(ckpts, run_dir, json_out)


def _report(ckpts, run_dir: Path, json_out: bool) -> None:
    from weightlab.training.lmc import summary_row
    from weightlab.training.logging import read_jsonl

    rows = [{"model": str(c.path), "test_top1": c.metrics.get("test", {}).get("top1"),
             "test_loss": c.metrics.get("test", {}).get("loss")} for c in ckpts]
    lmc = [summary_row(r) for r in read_jsonl(run_dir / "metrics.jsonl") if "lmc" in r]
    if json_out:
        print_json({"models": rows, "lmc": lmc} if lmc else rows)
        return
    table("trained", ["checkpoint", "test top-1", "test loss"],
          [[r["model"], pct(r["test_top1"]), r["test_loss"]] for r in rows])
    if lmc:
        table("linear mode connectivity during training (models 1 ↔ 2)",
              ["fraction", "iter", "test loss barrier", "test acc barrier", "test top-1 at α=½"],
              [[f"{r['fraction']:.2f}", r["iter"], r.get("test_loss_barrier"),
                pct(r.get("test_acc_barrier")), pct(r.get("test_mid_top1"))] for r in lmc])
