"""Learning-rate schedules as functions of the iteration: factor(it) multiplies the peak lr."""

from __future__ import annotations

import math

from weightlab.training.config import TrainConfig


def warmup_iterations(cfg: TrainConfig, total: int) -> int:
    """``warmup_iters`` plus ``warmup_epochs`` epochs of ``total / epochs`` iterations each."""
    return cfg.warmup_iters + cfg.warmup_epochs * (total // max(1, cfg.epochs))


def lr_factor(cfg: TrainConfig, it: int, total: int) -> float:
    warmup = warmup_iterations(cfg, total)
    if warmup and it < warmup:
        if cfg.warmup_start >= 0:  # torch LinearLR(start_factor=s, total_iters=W): s+(1−s)·it/W
            return cfg.warmup_start + (1 - cfg.warmup_start) * it / warmup
        return (it + 1) / warmup
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    t = it - warmup
    span = max(1, total - warmup)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "multistep":
        milestones = cfg.milestones or [int(total * 0.5), int(total * 0.75)]
        return cfg.gamma ** sum(it >= m for m in milestones)
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
    if cfg.schedule == "linear":
        return floor + (1 - floor) * max(0.0, 1 - t / span)
    if cfg.schedule == "onecycle":
        # triangular: up for the first 30%, then down to the floor
        peak = max(1, int(0.3 * total))
        if it < peak:
            return 0.1 + 0.9 * it / peak
        return floor + (1 - floor) * max(0.0, 1 - (it - peak) / max(1, total - peak))
    raise ValueError(cfg.schedule)
