"""``train``: one model, a pair or K models from a model name or a training recipe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import TrainResult
from weightlab.training import fanout

Params = dict[str, Any] | list[str] | None


@operation("train", out="dir", members=fanout.member_specs,
           gather="weightlab.training.fanout:gathered")
def train(
    model: Annotated[str | None, Opt("model name, e.g. cifar_resnet20, mlp (or the recipe's)")
                     ] = None,
    recipe: Annotated[str | None, Opt("a recipe name from recipes/train or a TOML path")
                      ] = None,
    data: Annotated[str | None, Opt("dataset name (default: the recipe's, else digits)")
                    ] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    out: Annotated[Path | None, Opt("run directory (default runs/<model>-<data>-s<seed>)")
                   ] = None,
    pair: Annotated[bool, Opt("train two models (seeds s, s+1)")] = False,
    models: Annotated[int | None, Opt("train K models side by side", min=1)] = None,
    seeds: Annotated[str | list[int] | None, Opt("one model per seed, e.g. 0,5,9 (instead "
                                                 "of seed with models or pair)")] = None,
    same_init: Annotated[bool | None, Opt("all models start from one init")] = None,
    epochs: Annotated[int | None, Opt("training epochs", min=1)] = None,
    batch_size: Annotated[int | None, Opt("images per step", min=1)] = None,
    lr: Annotated[float | None, Opt("peak learning rate")] = None,
    schedule: Annotated[str | None, Opt("multistep|cosine|linear|onecycle|constant")] = None,
    seed: Annotated[int | None, Opt("seed of the first model")] = None,
    save_epochs: Annotated[str | list[int] | None, Opt("epochs to keep")] = None,
    train_param: Annotated[Params, Opt("any training setting (weight_decay, milestones …)")
                           ] = None,
    model_param: Annotated[Params, Opt("model parameters", aliases=("param",))] = None,
    data_param: Annotated[Params, Opt("dataset parameters (e.g. normalization=cifar10 for "
                                      "the seed's CIFAR-100 inputs)")] = None,
    heldout: Annotated[int | None, Opt("training images held out", min=0)] = None,
    lmc_freq: Annotated[float | None, Opt("LMC of models 1 and 2 every this fraction")] = None,
    lmc_points: Annotated[int | None, Opt("α values per LMC curve", min=2)] = None,
    lmc_matcher: Annotated[str | None, Opt("align model 2 first for LMC")] = None,
    lmc_normalizer: Annotated[str | None, Opt("normalizer of each interpolated model")] = None,
    lmc_param: Annotated[Params, Opt("LMC settings")] = None,
    batched: Annotated[bool | None, Opt("K models in one vmapped step")] = None,
    compile_: Annotated[bool | None, Opt("torch.compile the training forward",
                                         aliases=("compile",))] = None,
    cuda_graphs: Annotated[bool | None, Opt("replay steps as CUDA graphs")] = None,
    amp: Annotated[str | None, Opt("bf16 autocast: auto, on, off")] = None,
    channels_last: Annotated[str | None, Opt("auto, on, off")] = None,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    resume: Annotated[bool, Opt("continue an interrupted run", runner=True)] = False,
    resume_every: Annotated[int, Opt("write the resume state every N iterations", min=0)] = 0,
    wandb_mode: Annotated[str, Opt("online|offline|disabled")] = "disabled",
    force: Annotated[bool, Opt("retrain over existing models", runner=True)] = False,
    download: Annotated[bool, Opt("fetch the dataset if missing")] = False,
    member: Annotated[int | None, Opt("train only model K of the run (its seed, init and "
                                      "file as in the whole run): one fanned-out step",
                                      min=1)] = None,
    executor: Annotated[Any, Opt("train the models as independent steps on this executor "
                                 "(local, ray, slurm, …); default: side by side here")] = None,
    executor_param: Annotated[Params, Opt("executor parameters")] = None,
    log: Any = None,
) -> TrainResult:
    """Train one model, a pair, or K models; checkpoints and metrics.jsonl go to the run
    directory. ``log`` (a callable taking one line) receives what the run says it does.

    With ``executor`` each model is its own step (``member=k``, :mod:`weightlab.training.
    fanout`): the same checkpoints (bit for bit at equal thread counts, for models that draw
    no random numbers while training), trained side by side on the executor's workers."""
    call = dict(locals())  # the options as given: the members' options
    from weightlab import device as devmod
    from weightlab import plugins
    from weightlab.data.bundle import check_data, load_data
    from weightlab.ops.common import param_dict
    from weightlab.params import build_params
    from weightlab.training import recipes
    from weightlab.training.config import SpeedOptions, TrainConfig
    from weightlab.training.lmc import LMCConfig, summary_row
    from weightlab.training.logging import WANDB_MODES, check_wandb, read_jsonl
    from weightlab.training.loop import TrainJob
    from weightlab.training.loop import train as run_train

    say = log or (lambda msg: None)
    if wandb_mode not in WANDB_MODES:
        raise UsageError(f"wandb_mode={wandb_mode!r}: expected one of {', '.join(WANDB_MODES)}")
    check_wandb(wandb_mode)  # installed? before the banner and the run directory
    rec = recipes.load(recipe) if recipe else recipes.Recipe("", Path())
    model = model or rec.model
    if not model:
        raise UsageError("model: name a model or a recipe")
    data = data or rec.data or "digits"
    values = {**rec.train, **param_dict(train_param)}
    if isinstance(save_epochs, list):
        save_epochs = ",".join(map(str, save_epochs))
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
    lmc_values = {**rec.lmc, **param_dict(lmc_param)}
    for k, v in {"freq": lmc_freq, "points": lmc_points, "matcher": lmc_matcher,
                 "normalizer": lmc_normalizer}.items():
        if v is not None:
            lmc_values[k] = v
    lmc = build_params(LMCConfig, lmc_values, prefix="lmc.") if lmc_values else None
    seed_list = fanout.parse_seeds(seeds)
    k_models = fanout.model_count({"seeds": seed_list, "models": models, "pair": pair,
                                   "recipe": recipe})
    if seed_list is not None:
        values["seed"] = seed_list[0]
        cfg = build_params(TrainConfig, values, prefix="train.")
    if member is not None and member > k_models:
        raise UsageError(f"member={member}: the run trains {k_models} model(s); expected "
                         f"1 … {k_models}")
    if lmc is not None and (member is not None or executor is not None):
        raise UsageError("lmc_freq measures models 1 and 2 while they train side by side: "
                         "it cannot fan out (drop executor/member)")
    if lmc is not None and k_models < 2:
        raise UsageError("lmc_freq measures between models 1 and 2: train a pair or K models")
    model_params = {**rec.model_params, **param_dict(model_param)}
    plugins.registry().create("models", model, model_params)  # name and parameters, before data
    dev = devmod.resolve(device)
    main = int(os.environ.get("RANK", "0")) == 0
    default_name = f"{rec.name}-s{cfg.seed}" if rec.name else f"{model}-{data}-s{cfg.seed}"
    run_dir = Path(out) if out else Path("runs") / default_name
    mine = [member] if member is not None else range(1, k_models + 1)
    finals = [run_dir / f"model_{k}.safetensors" for k in mine]
    if not resume and not force and any(f.exists() for f in finals):
        raise UsageError(f"{run_dir} already holds trained models; pass force=True to retrain "
                         f"or resume=True to continue")
    data_params = {**rec.data_params, **param_dict(data_param)}
    if executor is not None and not download:  # the members load the data, not this process
        check_data(data, data_dir=data_dir, params=data_params or None)
        return _fan_out(call, run_dir, k_models, executor, executor_param, say)
    bundle = load_data(data, data_dir=data_dir, device=dev, download=download,
                       params=data_params or None,
                       heldout=heldout if heldout is not None else rec.heldout or 0)
    if executor is not None:  # downloaded once here, then read by every member
        return _fan_out({**call, "download": False}, run_dir, k_models, executor,
                        executor_param, say)
    state_dir = run_dir / f"member-{member}" if member is not None else run_dir
    if resume and not (state_dir / "resume.pt").is_file() and main and member is None:
        say(f"no resume state in {run_dir}; starting from scratch")
    same = same_init if same_init is not None else bool(rec.same_init)
    job = TrainJob(model, model_params, bundle, cfg, run_dir,
                   num_models=1 if member is not None else k_models,
                   same_init=same, device=dev, wandb_mode=wandb_mode, speed=speed, lmc=lmc,
                   resume_every=resume_every, seed_list=seed_list,
                   first=member - 1 if member is not None else 0, state_dir=state_dir)
    if main:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        where = f"{world} processes" if world > 1 else dev
        which = f"model {member} of {k_models}" if member is not None else f"{k_models} ×"
        say(f"training {which} {model} on {bundle.name} ({len(bundle.train_idx)} images) "
            f"for {cfg.epochs} epochs on {where} → {run_dir}")
    ckpts = run_train(job, resume=resume, force=force)
    rows = [{"model": str(c.path), "test_top1": c.metrics.get("test", {}).get("top1"),
             "test_loss": c.metrics.get("test", {}).get("loss")} for c in ckpts]
    log_path = job.work_dir / "metrics.jsonl"
    lmc_rows = [summary_row(r) for r in read_jsonl(log_path) if "lmc" in r] \
        if main and log_path.exists() else []
    return TrainResult({"models": rows, "lmc": lmc_rows} if lmc_rows else rows,
                       checkpoints=ckpts, run_dir=run_dir)


def _fan_out(call: dict[str, Any], run_dir: Path, count: int, executor: Any,
             executor_param: Params, say: Any) -> TrainResult:
    """The run's models as one step each (``member=k``) through ``executor``, then the
    K-model result from their files. A rerun redoes only the members that did not finish."""
    import shutil

    from weightlab import checkpoint as ckpt_io
    from weightlab.executors import run_graph
    from weightlab.ops.common import component

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("executor: under torchrun every process trains the same models "
                         "data-parallel; fan out without torchrun")
    options = {**call, "out": str(run_dir.resolve()), "models": count, "pair": False}
    for key in ("data_dir",):  # a remote worker's working directory is not ours
        if options.get(key):
            options[key] = str(Path(options[key]).resolve())
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    if options.get("recipe") and Path(options["recipe"]).is_file():
        options["recipe"] = str(Path(options["recipe"]).resolve())
    if options.get("force"):  # retrain: the members' records and states go first
        for k in range(1, count + 1):
            (run_dir / fanout.STEP_DIR / f"model_{k}.json").unlink(missing_ok=True)
            shutil.rmtree(run_dir / f"member-{k}", ignore_errors=True)
    specs = fanout.member_specs(options, minimum=1)
    ex = component("executors", executor, executor_param)
    say(f"training {count} × {call.get('model') or call.get('recipe')} as {len(specs)} "
        f"step(s) on the {ex.name} executor → {run_dir}")
    try:
        run_graph(specs, {}, ex, run_dir, log=say)
    finally:
        ex.close()
    rows = fanout.gather(run_dir, count)
    ckpts = [ckpt_io.load(r["model"]) for r in rows]
    return TrainResult(rows, checkpoints=ckpts, run_dir=run_dir)
