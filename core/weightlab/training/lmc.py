"""Linear mode connectivity measured while two models train (models 1 and 2 of a run).

At iterations round(f·T) for f = 0, freq, 2·freq, …, 1 (T = total iterations) the curve
θ(α) = (1 − α)·θ_1 + α·align(θ_2), α ∈ linspace(0, 1, points), is evaluated on a fixed
training subset and the test set (``weightlab.interpolation.curve``), optionally after a
matcher aligns model 2 to model 1 and a normalizer (reset_bn, repair, …) corrects each
interpolated model. Barriers (Frankle et al. 2020; Qu & Horváth 2024): loss barrier =
max_α L(α) − ½(L(0) + L(1)); accuracy barrier = ½(A(0) + A(1)) − min_α A(α).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from weightlab.params import param


@dataclass
class LMCConfig:
    freq: float = param(0.1, "measure every this fraction of training (0 < freq <= 1)",
                        min=0.0, max=1.0, min_exclusive=True)
    points: int = param(11, "α values in linspace(0, 1, points)", min=2)
    matcher: str = param("identity", "align model 2 to model 1 first (a matcher name)")
    normalizer: str = param("none", "correct each interpolated model (a normalizer name)")
    train_samples: int = param(10000, "training images (no augmentation) evaluated per α",
                               min=0)
    test_samples: int = param(0, "test images evaluated per α (0: all)", min=0)
    calibration_samples: int = param(2000, "training images for data-driven matchers and "
                                           "normalizers", min=1)


def schedule(cfg: LMCConfig, total: int) -> list[tuple[float, int]]:
    """(fraction, iteration) pairs, fractions k·freq for k = 0 … ⌊1/freq⌋, plus 1.0."""
    n = int(1.0 / cfg.freq + 1e-9)
    fracs = [round(k * cfg.freq, 10) for k in range(n + 1)]
    if fracs[-1] < 1.0:
        fracs.append(1.0)
    out, seen = [], set()
    for f in fracs:
        it = int(round(f * total))
        if it not in seen:
            seen.add(it)
            out.append((f, it))
    return out


class LMCMeter:
    """Builds the matcher, normalizer and loaders once; :meth:`measure` gives one record."""

    def __init__(self, cfg: LMCConfig, data: Any, device: str | torch.device, input_shape,
                 registry=None, params: dict[str, dict] | None = None):
        from weightlab import plugins

        reg = registry or plugins.registry()
        params = params or {}
        self.cfg, self.input_shape, self.device = cfg, tuple(input_shape), torch.device(device)
        self.matcher = None if cfg.matcher in ("", "none", "identity") else \
            reg.create("matchers", cfg.matcher, params.get("matcher"))
        self.normalizer = None if cfg.normalizer in ("", "none") else \
            reg.create("normalizers", cfg.normalizer, params.get("normalizer"))
        self.loaders = {}
        if cfg.train_samples:
            self.loaders["train"] = data.loader("calibration", batch_size=1000,
                                                num_samples=cfg.train_samples, seed=1)
        self.loaders["test"] = data.loader("test", batch_size=1000,
                                           num_samples=cfg.test_samples or None)
        need = any(getattr(c, "needs_data", False) for c in (self.matcher, self.normalizer))
        self.calibration = data.loader("calibration", batch_size=500,
                                       num_samples=cfg.calibration_samples) if need else None
        self._graph = None

    def graph(self, model: torch.nn.Module):
        if self._graph is None and (self.matcher is not None or self.normalizer is not None):
            from weightlab.graph import trace

            self._graph = trace(model, torch.zeros(2, *self.input_shape, device=self.device))
        return self._graph

    @torch.no_grad()
    def measure(self, model_a: torch.nn.Module, model_b: torch.nn.Module) -> dict[str, Any]:
        from weightlab.interpolation import curve

        graph = self.graph(model_a)
        alignment = None
        if self.matcher is not None:
            with torch.enable_grad():  # some matchers differentiate
                alignment = self.matcher.match(graph, model_a, model_b, self.calibration)
        n = self.cfg.points
        alphas = [i / (n - 1) for i in range(n)]
        res = curve(model_a, model_b, self.loaders, alphas, alignment=alignment, graph=graph,
                    normalizer=self.normalizer, calibration=self.calibration)
        res.update({"matcher": self.cfg.matcher, "normalizer": self.cfg.normalizer})
        return res


def summary_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The scalars of an LMC record (for the terminal table and wandb)."""
    lmc = rec["lmc"]
    row = {"fraction": lmc["fraction"], "iter": rec["iter"]}
    for split in ("train", "test"):
        if split in lmc:
            row[f"{split}_loss_barrier"] = lmc[split]["loss_barrier"]
            row[f"{split}_acc_barrier"] = lmc[split]["acc_barrier"]
            row[f"{split}_mid_top1"] = lmc[split]["top1"][len(lmc[split]["top1"]) // 2]
    return row
