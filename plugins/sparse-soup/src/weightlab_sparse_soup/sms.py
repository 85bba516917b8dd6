"""Sparse Model Soups (Zimmer, Spiegel, Pokutta, ICLR 2024) and plain IMP, phase by phase.

Phase i (of n): prune the previous phase's soup (phase 1: the dense checkpoint) with global
magnitude pruning to overall sparsity 1 − (1 − goal)^(i/n), i.e. the fraction
1 − (1 − goal)^(1/n) of the remaining weights; retrain m copies under that shared mask, differing
in one hyperparameter (seed, weight decay, retraining length or initial learning rate); average
them (uniform or greedy soup), recompute BatchNorm statistics; continue from the soup.

Baseline "plain IMP with the same budget": one model follows its own prune–retrain chain from
the same dense checkpoint and retrains Σ_k E_k epochs per phase (m·E when the length does not
vary) — the same retraining compute as the m ingredients together (the paper's IMP with
m× longer retraining). Its other hyperparameters are the base ones (seed, weight decay and
schedule without the ingredients' variation). The best and the mean ingredient are reported
too; the best is picked by test accuracy, an upper bound that no selection could match.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightlab.errors import UsageError
from weightlab.params import build_params, param, parse_assignments, to_dict

from weightlab_sparse_soup.phases import VARY, ingredient_settings, phase_rate, phase_sparsity
from weightlab_sparse_soup.rundir import RunDir
from weightlab_sparse_soup.schedules import RETRAIN_SCHEDULES


@dataclass
class SMSParams:
    """What an SMS run computes (recorded in sms.json; a resumed run must match)."""

    goal_sparsity: float = param(0.9, "final fraction of prunable weights removed", min=0.0,
                                 max=0.9999)
    phases: int = param(3, "prune–retrain cycles", min=1)
    ingredients: int = param(4, "models retrained per phase (the soup's ingredients)", min=1)
    vary: str = param("seed", "hyperparameter that differs between ingredients", choices=VARY)
    values: list[float] = param([], "its value for each ingredient (seed default: s, s+1, …)")
    retrain_epochs: int = param(2, "retraining epochs per ingredient and phase", min=1)
    schedule: str = param("LLR", "retraining schedule", choices=RETRAIN_SCHEDULES)
    ensemble: str = param("uniform", "how ingredients are combined", choices=("uniform",
                                                                              "greedy"))
    pruner: str = param("global_magnitude", "registered pruner (IMP: global magnitude)")
    imp: bool = param(True, "also run plain IMP with the same retraining budget")
    seed: int = param(0, "base seed (data order of retraining)")
    batch_size: int | None = param(None, "retraining batch size (default: the original's)",
                                   min=1)
    original: list[str] = param([], "key=value settings of the pretraining recipe the "
                                    "schedules derive from (default: the checkpoint's)")
    data: str | None = param(None, "dataset (default: the checkpoint's)")
    data_dir: str | None = param(None, "dataset root (default: $WEIGHTLAB_DATA or ./data)")
    heldout: int = param(0, "training images held out for greedy selection", min=0)
    train_samples: int | None = param(None, "retrain on a seeded subset of N training images",
                                      min=1)
    bn_samples: int = param(5000, "training images to recompute BatchNorm statistics", min=1)


def make_params(values: dict[str, Any]) -> SMSParams:
    p = build_params(SMSParams, values, prefix="sms.")
    if p.ensemble == "greedy" and p.heldout <= 0:
        raise UsageError("--ensemble greedy: needs held-out training images, pass --heldout N")
    ingredient_settings(p.vary, p.values, p.ingredients, p.seed)  # validates --values early
    return p


class Pipeline:
    """Runs (or resumes) an SMS run directory. ``on_step(name)`` is called after every
    finished step — a progress hook (and how tests interrupt a run).

    Retraining (the ingredients of a phase, plain IMP) runs in this process, or through
    ``executor`` (a :class:`weightlab.components.Executor`: ``local`` worker processes,
    ``ray``, ``slurm``) as independent steps; ``workers > 1`` without an executor means the
    local one with that many worker processes over ``devices``. ``threads``: torch threads
    per retraining (default: this process's in process, cores / workers elsewhere)."""

    def __init__(self, checkpoint: str | Path, params: SMSParams, run_dir: str | Path, *,
                 device: str = "cpu", workers: int = 1, devices: list[str] | None = None,
                 executor: Any = None, threads: int | None = None, force: bool = False,
                 log: Callable[[str], None] | None = None,
                 on_step: Callable[[str], None] | None = None, registry=None):
        from weightlab import checkpoint as ckpt_io

        self.checkpoint = Path(checkpoint)
        self.p = params
        self.dir = RunDir(Path(run_dir))
        self.devices = devices or [device]
        self.device = self.devices[0]
        self.workers = max(1, workers)
        # where retraining runs: an executor component (ray, slurm, local …); without one,
        # workers > 1 means local worker processes spread over ``devices``
        self.executor = executor
        # torch threads per retraining; results are bit-identical across executors only at
        # equal thread counts (a different summation order changes the last bits)
        self.threads = threads
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.on_step = on_step or (lambda step: None)
        self.registry = registry
        header = ckpt_io.read_header(self.checkpoint)
        self.data_name = params.data or header.get("data", {}).get("name")
        if not self.data_name:
            raise UsageError(f"{self.checkpoint}: the checkpoint names no dataset; pass --data")
        self.data_params = None if params.data else header.get("data", {}).get("params")
        self.train_header = header.get("train", {})
        from weightlab_sparse_soup.schedules import OriginalSchedule

        # the retraining schedule derives from the original: a missing or bad recipe is an
        # error now, before anything is pruned or written
        OriginalSchedule.from_header(self.train_header, 1, parse_assignments(params.original),
                                     str(self.checkpoint))
        config = {"checkpoint": str(self.checkpoint.resolve()), **to_dict(params)}
        self.resumed = self.dir.start(config, force)
        self._bundle = self._train_bundle = None
        self.timings: dict[str, float] = {}
        self._clock = time.perf_counter()

    # --- data ----------------------------------------------------------------------------

    def data_spec(self) -> dict:
        return {"name": self.data_name, "data_dir": self.p.data_dir, "heldout": self.p.heldout,
                "params": self.data_params, "train_samples": self.p.train_samples,
                "seed": self.p.seed}

    def bundle(self):
        """The full dataset (calibration, held-out and test splits) on the main device."""
        if self._bundle is None:
            from weightlab.data.bundle import load_data

            self._bundle = load_data(self.data_name, data_dir=self.p.data_dir,
                                     device=self.device, heldout=self.p.heldout,
                                     params=self.data_params, registry=self.registry)
        return self._bundle

    def train_bundle(self):
        if self._train_bundle is None:
            from weightlab_sparse_soup.phases import subset

            self._train_bundle = subset(self.bundle(), self.p.train_samples, self.p.seed)
        return self._train_bundle

    def calibration(self):
        return self.bundle().loader("calibration", batch_size=500, num_samples=self.p.bn_samples)

    def heldout(self):
        return self.bundle().loader("heldout", batch_size=1000) if self.p.heldout else None

    # --- the pipeline --------------------------------------------------------------------

    def run(self, phase: int | None = None) -> dict:
        """All phases (skipping finished steps), or only ``phase``; then the summary."""
        from weightlab_sparse_soup.report import write_summary

        if phase is not None and not 1 <= phase <= self.p.phases:
            raise UsageError(f"--phase {phase}: expected 1 … {self.p.phases}")
        for i in [phase] if phase else range(1, self.p.phases + 1):
            self.run_phase(i)
        return write_summary(self.dir, self.p)

    def _step(self, step: str) -> None:
        """Record a finished step and the wall time since the previous one (``timings``)."""
        now = time.perf_counter()
        self.timings[step] = now - self._clock
        self._clock = now
        self.dir.mark(step)
        self.on_step(step)

    def run_phase(self, i: int) -> None:
        d, p = self.dir, self.p
        rate, target = phase_rate(p.goal_sparsity, p.phases), phase_sparsity(p.goal_sparsity,
                                                                              p.phases, i)
        self.log(f"phase {i}/{p.phases}: prune {rate:.1%} of the remaining weights → "
                 f"{target:.1%} sparsity")
        self._clock = time.perf_counter()
        start = self.checkpoint if i == 1 else d.soup(i - 1)
        if not start.is_file():
            raise UsageError(f"{start}: phase {i - 1}'s soup is missing; run --phase {i - 1} "
                             f"first")
        self._prune(f"phase_{i}/pruned", start, d.pruned(i), target, i)
        settings = ingredient_settings(p.vary, p.values, p.ingredients, p.seed)
        specs = [self._spec(d.pruned(i), d.ingredient_dir(i, k), s, rate)
                 for k, s in enumerate(settings, start=1)]
        self._train([(f"phase_{i}/ingredient_{k}", s) for k, s in enumerate(specs, start=1)])
        if not d.is_done(f"phase_{i}/soup", d.soup(i)):
            self._soup(i)
            self._step(f"phase_{i}/soup")
        if p.imp:
            imp_start = self.checkpoint if i == 1 else d.imp(i - 1)
            if not imp_start.is_file():
                raise UsageError(f"{imp_start}: phase {i - 1}'s IMP model is missing; run "
                                 f"--phase {i - 1} first")
            self._prune(f"phase_{i}/imp_pruned", imp_start, d.imp_pruned(i), target, i)
            budget = sum(s.get("epochs", p.retrain_epochs) for s in settings)
            spec = self._spec(d.imp_pruned(i), d.imp_dir(i), {"epochs": budget}, rate)
            self._train([(f"phase_{i}/imp", spec)])
        if not d.is_done(f"phase_{i}/metrics", d.metrics(i)):
            from weightlab_sparse_soup.report import evaluate_phase

            evaluate_phase(self, i, rate, target)
            self._step(f"phase_{i}/metrics")

    def _prune(self, step: str, start: Path, out: Path, target: float, i: int) -> None:
        from weightlab import checkpoint as ckpt_io

        from weightlab_sparse_soup.phases import prune_step

        if self.dir.is_done(step, out):
            return
        net, ck = ckpt_io.load_model(start, self.device, self.registry)
        loader = self.calibration()
        masks, drop = prune_step(net, ck.masks, target, pruner=self.p.pruner, data=loader,
                                 registry=self.registry)
        ck.state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        ck.masks = {k: v.cpu() for k, v in masks.items()}
        ck.provenance = {**ck.provenance, "kind": "pruned", "pruned_from": str(start)}
        ck.extra = {**ck.extra, "sms": {"phase": i, "target_sparsity": target,
                                        "norm_drop": drop, "pruner": self.p.pruner}}
        ckpt_io.save(ck, out, force=True)
        self.log(f"  pruned {start.name} → {out.relative_to(self.dir.root)} "
                 f"(relative norm drop {drop:.3f})")
        self._step(step)

    def _spec(self, init: Path, run_dir: Path, setting: dict, rate: float) -> dict:
        from weightlab import checkpoint as ckpt_io

        from weightlab_sparse_soup.schedules import OriginalSchedule, retrain_config

        p = self.p
        full, train = self.bundle(), self.train_bundle()
        orig = OriginalSchedule.from_header(self.train_header, len(full.train_idx),
                                            parse_assignments(p.original), str(self.checkpoint))
        base = {"batch_size": p.batch_size or orig.cfg.batch_size,
                "momentum": orig.cfg.momentum, "nesterov": orig.cfg.nesterov,
                "weight_decay": setting.get("weight_decay", orig.cfg.weight_decay),
                "seed": setting.get("seed", p.seed),
                "label_smoothing": orig.cfg.label_smoothing}
        steps = -(-len(train.train_idx) // base["batch_size"])
        drop = ckpt_io.read_header(init).get("sms", {}).get("norm_drop")
        cfg = retrain_config(p.schedule, orig, setting.get("epochs", p.retrain_epochs), steps,
                             base, norm_drop=drop, prune_fraction=rate, lr=setting.get("lr"))
        threads = self.threads or max(1, (os.cpu_count() or 1) // self.workers)
        return {"init": str(init), "run_dir": str(run_dir), "train": to_dict(cfg),
                "data": self.data_spec(), "device": self.device, "threads": threads}

    def _train(self, jobs: list[tuple[str, dict]]) -> None:
        """Retrain what is not finished yet: in this process, or as independent steps through
        the executor (:func:`weightlab.executors.run_graph`)."""
        from weightlab_sparse_soup.worker import RESULT, train_one

        todo = []
        for step, spec in jobs:
            if self.dir.is_done(step, Path(spec["run_dir"]) / RESULT):
                self.log(f"  {step}: finished earlier, skipped")
            else:
                todo.append((step, spec))
        if self.executor is not None or (self.workers > 1 and len(todo) > 1):
            self._fan_out(todo)
            return
        for step, spec in todo:
            spec = {**spec, "threads": self.threads}  # None: this process's setting
            train_one(spec, self.train_bundle(), self.registry)
            self._trained(step, spec)

    def _fan_out(self, todo: list[tuple[str, dict]]) -> None:
        """Each retraining is a step spec (data): any executor runs it with the same result;
        each finished one is recorded at once, even if another fails."""
        from weightlab.executors import run_graph
        from weightlab.executors.local import LocalExecutor

        from weightlab_sparse_soup.worker import step_spec

        if not todo:
            return
        by_id = {step: spec for step, spec in todo}
        specs = [step_spec(step, spec, self.dir.root) for step, spec in todo]
        executor = self.executor or LocalExecutor(workers=self.workers,
                                                  devices=self.devices
                                                  if len(self.devices) > 1 else [])
        self.log(f"  retraining {len(todo)} models through the {executor.name} executor")
        try:
            run_graph(specs, {}, executor, self.dir.root, log=self.log,
                      on_done=lambda step, record: self._trained(step, by_id[step]))
        finally:
            if self.executor is None:
                executor.close()

    def _trained(self, step: str, spec: dict) -> None:
        t = spec["train"]
        self.log(f"  {step}: retrained {t['epochs']} epochs ({t['schedule']}, lr {t['lr']:.3g}, "
                 f"wd {t['weight_decay']:g}, seed {t['seed']}; "
                 f"{time.perf_counter() - self._clock:.1f} s)")
        self._step(step)

    def _soup(self, i: int) -> None:
        from weightlab import checkpoint as ckpt_io
        from weightlab import plugins

        d = self.dir
        paths = [d.ingredient(i, k) for k in range(1, self.p.ingredients + 1)]
        loaded = [ckpt_io.load_model(pth, self.device, self.registry) for pth in paths]
        reg = self.registry or plugins.registry()
        ens = reg.create("ensembles", self.p.ensemble)
        soup = ens.combine([n for n, _ in loaded], self.heldout(),
                           masks=[c.masks for _, c in loaded], calibration=self.calibration(),
                           names=[str(pth.relative_to(d.root)) for pth in paths])
        first = loaded[0][1]
        ck = ckpt_io.from_model(soup, first.model, masks=ens.shared_mask, data=first.data,
                                train=first.train,
                                provenance={"kind": "soup", "method": self.p.ensemble,
                                            "ingredients": [str(pth) for pth in paths],
                                            "chosen": ens.info["chosen"],
                                            "selection": ens.info if self.p.ensemble == "greedy"
                                            else None})
        ckpt_io.save(ck, d.soup(i), force=True)
        self.log(f"  {self.p.ensemble} soup of ingredients {ens.info['chosen']} → "
                 f"{d.soup(i).relative_to(d.root)}")
