"""The pieces of one IMP phase: its pruning rate, the pruning step, the ingredients' settings."""

from __future__ import annotations

import dataclasses

import torch
from weightlab.errors import UsageError

VARY = ("seed", "weight_decay", "retrain_length", "learning_rate")


def phase_rate(goal: float, phases: int) -> float:
    """Fraction of the *remaining* weights pruned in each phase: 1 − (1 − goal)^(1/phases), so
    that after all phases (1 − rate)^phases = 1 − goal of the weights remain."""
    return 1.0 - (1.0 - goal) ** (1.0 / phases)


def phase_sparsity(goal: float, phases: int, i: int) -> float:
    """Overall sparsity after phase i (1-based): 1 − (1 − rate)^i = 1 − (1 − goal)^(i/phases)."""
    return 1.0 - (1.0 - phase_rate(goal, phases)) ** i


@torch.no_grad()
def _flat_params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def prune_step(model: torch.nn.Module, masks: dict[str, torch.Tensor], sparsity: float, *,
               pruner: str = "global_magnitude", data=None, registry=None
               ) -> tuple[dict[str, torch.Tensor], float]:
    """Prune ``model`` in place to overall ``sparsity`` (of its prunable weights; already-pruned
    weights stay pruned) with a registered pruner (IMP: global magnitude). Returns the new masks
    and the relative norm drop d = ‖θ − θ_pruned‖₂ / ‖θ‖₂ over all parameters (ALLR's input)."""
    from weightlab import plugins

    reg = registry or plugins.registry()
    comp = reg.create("pruners", pruner)  # global_magnitude is built in (weightlab.pruners)
    before = _flat_params(model)
    new_masks = comp.prune(model, sparsity, dict(masks),
                           data=data if comp.needs_data else None)
    after = _flat_params(model)
    diff2 = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(after, before))
    norm2 = sum(float(b.double().pow(2).sum()) for b in before)
    return {k: v.bool() for k, v in new_masks.items()}, (diff2 / norm2) ** 0.5 if norm2 else 0.0


def ingredient_settings(vary: str, values: list[float] | None, m: int, base_seed: int = 0
                        ) -> list[dict]:
    """The hyperparameter that differs per ingredient: one dict per ingredient with ``seed``,
    ``weight_decay``, ``epochs`` (retrain_length) or ``lr`` (learning_rate, the initial value
    after warm-up). Only ``seed`` has a default: base_seed, base_seed + 1, …"""
    if vary not in VARY:
        raise UsageError(f"--vary {vary!r}: expected one of {', '.join(VARY)}")
    if not values:
        if vary != "seed":
            raise UsageError(f"--vary {vary} needs --values with {m} comma-separated values")
        values = [base_seed + k for k in range(m)]
    if len(values) != m:
        raise UsageError(f"--values: {len(values)} values given for --ingredients {m}")
    out = []
    for v in values:
        if vary in ("seed", "retrain_length") and float(v) != int(v):
            raise UsageError(f"--values {v}: --vary {vary} needs whole numbers")
        if vary == "seed":
            out.append({"seed": int(v)})
        elif vary == "weight_decay":
            if v < 0:
                raise UsageError(f"--values {v}: a weight decay must be >= 0")
            out.append({"weight_decay": float(v)})
        elif vary == "retrain_length":
            if v < 1:
                raise UsageError(f"--values {v}: a retraining length must be >= 1 epoch")
            out.append({"epochs": int(v)})
        else:
            if v <= 0:
                raise UsageError(f"--values {v}: a learning rate must be > 0")
            out.append({"lr": float(v)})
    return out


def subset(bundle, n: int | None, seed: int = 0):
    """The bundle with its training split cut to a seeded random ``n`` images (quick runs)."""
    if not n or n >= len(bundle.train_idx):
        return bundle
    perm = torch.randperm(len(bundle.train_idx), generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(bundle, train_idx=bundle.train_idx[perm[:n]].sort().values)
