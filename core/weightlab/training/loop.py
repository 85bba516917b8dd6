"""Train one model or K models side by side, each with its own seed and data order.

The step itself lives in :mod:`weightlab.training.engines` (sequential, or all K models in one
vmapped step); this module runs epochs: learning rate per iteration, evaluation, linear mode
connectivity at fractions of training, metrics, checkpoints, and the resume state.

Every epoch ends with a resume state (``resume.pt``: tensors and numbers only, loaded with
``weights_only=True``): weights and buffers, momentum buffers, the iteration and the batch
within the epoch, the epoch's running metric sums, RNG states. It is also written every
``resume_every`` iterations when asked, and when SIGTERM (a scheduler's preemption) or SIGINT
(Ctrl-C) arrives: the step in flight finishes, the state is written, and training stops with
:class:`TrainingInterrupted` (a second Ctrl-C stops at once). The data order and augmentation
of an epoch are a function of (seed, epoch), so an interrupted run continues where it stopped,
mid-epoch too, and ends with the same weights as an uninterrupted one. Under ``torchrun`` the
same code runs data-parallel (see :mod:`.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from weightlab import checkpoint as ckpt_io
from weightlab.atomic import atomic_path
from weightlab.errors import TrainingInterrupted
from weightlab.params import to_dict
from weightlab.training import distributed as dist_mod
from weightlab.training import engines
from weightlab.training.config import SpeedOptions, TrainConfig
from weightlab.training.lmc import LMCConfig, LMCMeter, schedule
from weightlab.training.logging import MetricLog, truncate_after
from weightlab.training.schedules import lr_factor

RESUME_FILE = "resume.pt"


@dataclass
class TrainJob:
    model_name: str
    model_params: dict[str, Any]
    data: Any  # DataBundle
    cfg: TrainConfig
    run_dir: Path
    num_models: int = 1
    same_init: bool = False
    device: str = "cpu"
    wandb_mode: str = "disabled"
    init_states: list[dict[str, torch.Tensor]] | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    name_prefix: str = "model"
    speed: SpeedOptions = field(default_factory=SpeedOptions)
    lmc: LMCConfig | None = None  # measure LMC between models 1 and 2 while training
    lmc_params: dict[str, dict] = field(default_factory=dict)  # matcher/normalizer params
    resume_every: int = 0  # also write the resume state every N iterations (0: epoch ends)
    # the job may train a slice of a larger run (one fanned-out member, weightlab.training.
    # fanout): its models are the run's models first+1 … first+num_models, with the run's seeds
    # (``seed_list``, default cfg.seed + index), names and init; ``state_dir`` keeps its
    # metrics.jsonl and resume state apart from the other members' (default: run_dir)
    seed_list: list[int] | None = None
    first: int = 0
    init_seed: int | None = None  # with same_init (default: the run's first seed)
    state_dir: Path | None = None

    def seeds(self) -> list[int]:
        """The seeds of this job's models (model k: the run's seed list at first + k)."""
        if self.seed_list is not None:
            return list(self.seed_list[self.first:self.first + self.num_models])
        return [self.cfg.seed + self.first + k for k in range(self.num_models)]

    def index(self, k: int) -> int:
        """The run's 1-based number of this job's model k (its file ``model_<index>``)."""
        return self.first + k + 1

    @property
    def work_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir is not None else Path(self.run_dir)


def build_models(job: TrainJob, registry=None, device: str | None = None
                 ) -> list[torch.nn.Module]:
    """Model k initialised from seed + k (all from the first seed with ``same_init``)."""
    from weightlab import plugins

    reg = registry or plugins.registry()
    comp = reg.create("models", job.model_name, job.model_params)
    nets = []
    first_seed = job.seed_list[0] if job.seed_list else job.cfg.seed
    for k, seed in enumerate(job.seeds()):
        torch.manual_seed((first_seed if job.init_seed is None else job.init_seed)
                          if job.same_init else seed)
        net = comp.build(job.data.input_shape, job.data.num_classes)
        if job.init_states is not None:
            net.load_state_dict(job.init_states[(job.first + k) % len(job.init_states)])
        ckpt_io.apply_masks(net, job.masks)
        nets.append(net.to(device or job.device))
    return nets


def model_info(job: TrainJob, registry=None) -> dict[str, Any]:
    from weightlab import plugins

    reg = registry or plugins.registry()
    comp = reg.create("models", job.model_name, job.model_params)
    return ckpt_io.model_info(job.model_name, comp.params_dict(), job.data.input_shape,
                              job.data.num_classes)


def train(job: TrainJob, *, resume: bool = False, progress: bool = True,
          on_epoch: Callable[[int, list[torch.nn.Module]], dict | None] | None = None,
          registry=None, force: bool = False) -> list[ckpt_io.Checkpoint]:
    """Train the job's models; returns their final checkpoints (written to the run directory;
    under torchrun only rank 0 writes, and the other ranks return an empty list)."""
    from weightlab.training.logging import check_wandb

    check_wandb(job.wandb_mode)  # before anything is written
    created = not job.run_dir.exists()
    dist = dist_mod.setup(job.device)
    try:
        return _Run(job, dist, registry).run(resume, progress, on_epoch)
    except BaseException:
        _remove_if_empty(job.run_dir, created)
        raise
    finally:
        dist_mod.teardown(dist)


def _remove_if_empty(run_dir: Path, created: bool) -> None:
    """A run that failed or was interrupted before writing anything (data loading, wandb start)
    leaves no empty run directory behind; wandb's own start-up files do not count."""
    if not created or not run_dir.is_dir():
        return
    wandb_dir = run_dir / "wandb"
    if any(p != wandb_dir for p in run_dir.iterdir()):
        return
    if wandb_dir.exists():
        shutil.rmtree(wandb_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


class _Run:
    def __init__(self, job: TrainJob, dist: dist_mod.DistInfo, registry):
        self.job, self.dist, self.registry = job, dist, registry
        self.device = torch.device(dist.device)
        data = job.data
        if getattr(data, "device", self.device) != self.device:  # torchrun: cuda:LOCAL_RANK
            data = dataclasses.replace(data, device=self.device)
        self.data = data
        self.main = dist.is_main

    def run(self, resume: bool, progress: bool, on_epoch) -> list[ckpt_io.Checkpoint]:
        from weightlab.metrics import evaluate

        job, cfg, data, dist = self.job, self.job.cfg, self.data, self.dist
        if self.main:
            job.run_dir.mkdir(parents=True, exist_ok=True)
            job.work_dir.mkdir(parents=True, exist_ok=True)
        nets = build_models(job, self.registry, str(self.device))
        engine = engines.create(nets, cfg, job.speed, self.device, dist, job.masks,
                                data.input_shape)
        nets = engine.models
        loaders = [data.loader("train", batch_size=cfg.batch_size, shuffle=True,
                               augment=cfg.augment,
                               seed=s, drop_last=False) for s in job.seeds()]
        for ld in loaders:
            if dist.enabled:
                ld.set_shard(dist.rank, dist.world)
        test_loader = data.loader("test", batch_size=1000)
        n_train, steps = loaders[0].num_samples, len(loaders[0])
        total = cfg.epochs * steps
        start_epoch, it, start_batch = 0, 0, 0
        resume_path = job.work_dir / RESUME_FILE
        metrics_path = job.work_dir / "metrics.jsonl"
        if resume and resume_path.is_file():
            start_epoch, it, start_batch = _load_resume(resume_path, engine, self.device,
                                                        self.main)
            if self.main:
                truncate_after(metrics_path, it)
        elif self.main and metrics_path.exists():
            metrics_path.unlink()  # a fresh run starts a fresh log
        lmc_points, meter = [], None
        if job.lmc is not None and len(nets) >= 2 and self.main:
            meter = LMCMeter(job.lmc, data, self.device, data.input_shape, self.registry,
                             job.lmc_params)
            lmc_points = [(f, i) for f, i in schedule(job.lmc, total) if i >= it]
            if resume and it > 0:
                lmc_points = [(f, i) for f, i in lmc_points if i > it]
        log = MetricLog(metrics_path, job.wandb_mode if self.main else "disabled",
                        {"model": job.model_name, "engine": engine.name, **to_dict(cfg)},
                        run_name=job.run_dir.name) if self.main else None
        info = model_info(job, self.registry)
        final_metrics: list[dict] = [{} for _ in nets]
        bar = _progress(progress and self.main, total, it, engine)
        stack = contextlib.ExitStack()
        lr = cfg.lr * lr_factor(cfg, max(0, it - 1), total)
        try:
            stop = stack.enter_context(_stop_requests())
            if lmc_points and lmc_points[0][1] == it:
                self._lmc(meter, nets, lmc_points.pop(0)[0], it, steps, log)
            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.time()
                first = start_batch if epoch == start_epoch else 0
                for ld in loaders:
                    ld.set_epoch(epoch, start=first)
                for n in nets:
                    n.train()
                if not first:  # mid-epoch resume: the sums came with the resume state
                    engine.sums.zero_()
                if bar is not None:
                    bar.set(epoch=f"{epoch + 1}/{cfg.epochs}")
                for i, batches in enumerate(zip(*loaders), start=first):
                    lr = cfg.lr * lr_factor(cfg, it, total)
                    global_b = min(cfg.batch_size, n_train - i * cfg.batch_size)
                    # an empty share (final batch smaller than the world) keeps its statistics
                    with (dist_mod.keep_norm_stats(engine.models) if len(batches[0][1]) == 0
                          else contextlib.nullcontext()):
                        engine.step(batches, lr, dist.world / global_b)
                    it += 1
                    if bar is not None:
                        bar.advance(1, items=global_b)
                    if lmc_points and lmc_points[0][1] == it:
                        self._lmc(meter, nets, lmc_points.pop(0)[0], it, steps, log)
                    periodic = bool(job.resume_every) and it % job.resume_every == 0
                    if i + 1 < steps and (periodic or stop.is_set()):
                        # the epoch's metric sums over all ranks (a collective: only at the
                        # iterations every rank agrees on); a signal may reach ranks at
                        # different steps, so then rank 0 saves its own share
                        sums = dist_mod.all_reduce_sum(engine.sums.clone(), dist) \
                            if periodic else engine.sums
                        if self.main:
                            _save_resume(resume_path, epoch, it, engine, self.device, i + 1,
                                         sums)
                        if stop.is_set():
                            raise TrainingInterrupted(
                                f"training stopped at iteration {it} (epoch {epoch + 1}, batch "
                                f"{i + 1} of {steps}); its state is in {resume_path}: run the "
                                f"same command with --resume to continue")
                ep = epoch + 1
                seconds = time.time() - t0  # training (and LMC) time, before evaluation
                s = dist_mod.all_reduce_sum(engine.sums.clone(), dist).cpu()
                do_eval = ep == cfg.epochs or (cfg.eval_every and ep % cfg.eval_every == 0)
                extra = on_epoch(ep, nets) if on_epoch else None
                if self.main:
                    for k, net in enumerate(nets):
                        rec = {"epoch": ep, "iter": it, "model": job.index(k), "lr": lr,
                               "train_loss": float(s[k, 0] / s[k, 2]),
                               "train_top1": float(s[k, 1] / s[k, 2]),
                               "epoch_seconds": seconds, "engine": engine.name}
                        if do_eval:
                            m = evaluate(net, test_loader)
                            rec.update({"test_loss": m["loss"], "test_top1": m["top1"],
                                        "test_top5": m["top5"]})
                            final_metrics[k] = {
                                "test": {kk: m[kk] for kk in ("loss", "top1", "top5")},
                                "train": {"loss": rec["train_loss"], "top1": rec["train_top1"]},
                                "epoch": ep}
                        if extra:
                            rec.update(extra)
                        log.log(rec)
                        if ep in cfg.save_epochs:
                            _save_ckpt(job, info, net, k, final_metrics[k] or rec, ep,
                                       force=True)
                    _save_resume(resume_path, ep, it, engine, self.device)
                dist_mod.barrier(dist)
                if stop.is_set() and ep < cfg.epochs:
                    raise TrainingInterrupted(
                        f"training stopped after epoch {ep} (iteration {it}); its state is in "
                        f"{resume_path}: run the same command with --resume to continue")
        finally:
            stack.close()
            if bar is not None:
                bar.stop()
            if log is not None:
                log.close()
        if not self.main:
            return []
        out = [_save_ckpt(job, info, net, k, final_metrics[k], None, force=True)
               for k, net in enumerate(nets)]
        if resume_path.is_file():
            os.unlink(resume_path)
        return out

    def _lmc(self, meter: LMCMeter, nets, fraction: float, it: int, steps: int,
             log: MetricLog) -> None:
        res = meter.measure(nets[0], nets[1])
        res["fraction"] = fraction
        rec = {"iter": it, "epoch": it / steps, "lmc": res}
        log.log(rec)
        for n in nets:
            n.train()


@contextlib.contextmanager
def _stop_requests():
    """An event set by SIGTERM or a first SIGINT (a second SIGINT interrupts at once); the
    previous handlers come back afterwards. Outside the main thread (no signals): never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum, frame):
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _save_resume(path: Path, epoch: int, it: int, engine: engines.Engine,
                 device: torch.device, batch: int = 0, sums: torch.Tensor | None = None
                 ) -> None:
    """``epoch`` epochs and ``batch`` batches of the next one are done (``it`` steps);
    ``sums``: the running metric sums of that epoch (default: this process's)."""
    sums = engine.sums if sums is None else sums
    state = {"epoch": epoch, "iter": it, "batch": batch, "sums": sums.detach().cpu(),
             "rng": torch.get_rng_state(),
             "models": [{k: v.detach().cpu() for k, v in n.state_dict().items()}
                        for n in engine.models],
             "momentum": [{n: {k: v.detach().cpu() for k, v in entry.items()}
                           for n, entry in st.items()} for st in engine.momentum_state()]}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_resume(path: Path, engine: engines.Engine, device: torch.device, main: bool = True
                 ) -> tuple[int, int, int]:
    from weightlab.errors import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if len(state["models"]) != len(engine.models):
            raise CheckpointError(f"{path}: resume state holds {len(state['models'])} models, "
                                  f"this run trains {len(engine.models)}")
        with torch.no_grad():
            for n, s in zip(engine.models, state["models"]):
                n.load_state_dict(s)  # copies in place: stacked (batched) tensors follow
        engine.load_momentum_state(state["momentum"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        batch = int(state.get("batch", 0))
        if batch and main:  # the saved sums cover every rank: rank 0 carries them
            engine.sums.copy_(state["sums"])
        elif batch:
            engine.sums.zero_()
        return int(state["epoch"]), int(state["iter"]), batch
    except (KeyError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: unusable resume state ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]}); delete it to start over") from None


def _save_ckpt(job: TrainJob, info, net, k: int, metrics: dict, epoch: int | None, force: bool):
    from weightlab import __version__

    suffix = f"_{epoch}" if epoch is not None else ""
    path = job.run_dir / f"{job.name_prefix}_{job.index(k)}{suffix}.safetensors"
    c = ckpt_io.from_model(net, info, masks={kk: v.cpu() for kk, v in job.masks.items()},
                           data=job.data.describe(), train=to_dict(job.cfg), metrics=metrics,
                           provenance={"weightlab": __version__, "seed": job.seeds()[k],
                                       "same_init": job.same_init, "kind": "trained",
                                       "epoch": epoch or job.cfg.epochs})
    ckpt_io.save(c, path, force=force)
    return c


def _progress(enabled: bool, total: int, done: int, engine: engines.Engine):
    """The training bar: epoch, the running epoch's training loss and top-1 (read from the
    engine's on-device sums once per refresh), img/s, ETA."""
    if not enabled:
        return None
    from weightlab.progress import StepBar

    def stats() -> dict:
        s = engine.sums.detach().cpu()  # K × [Σ loss, Σ correct, n]
        if float(s[0, 2]) == 0:
            return {"loss": None, "top-1": None}
        loss, top1 = (s[:, 0] / s[:, 2]).tolist(), (s[:, 1] / s[:, 2]).tolist()
        if len(loss) == 1:
            return {"loss": loss[0], "top-1": top1[0]}
        # K models side by side: each model's value, model 1 first
        return {"loss": "/".join(f"{v:.3f}" for v in loss),
                "top-1": "/".join(f"{100 * v:.1f}%" for v in top1)}

    return StepBar("training", total, done, unit="img", stats=stats)
