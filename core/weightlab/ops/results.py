"""Typed results of the operations. Each holds the Python objects a notebook wants (models,
checkpoints) and ``to_json()``, the plain data the CLI prints with ``--json`` and a recipe
step keeps as its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """Base: ``data`` is the JSON form; subclasses add the live objects."""

    data: Any = None

    def to_json(self) -> Any:
        return self.data

    def __getitem__(self, key: Any) -> Any:  # result["test"]["top1"] reads like the JSON
        return self.data[key]


@dataclass
class MergeResult(Result):
    model: Any = None            # the merged nn.Module
    checkpoint: Any = None       # its weightlab.checkpoint.Checkpoint (saved when out was given)
    aligned: list[Any] = field(default_factory=list)     # the inputs in the first's space
    alignments: list[Any] = field(default_factory=list)


@dataclass
class CurveResult(Result):
    """Interpolation: data has alpha, per split loss/top1 lists and the barriers."""

    plot: Any = None


@dataclass
class DiagnosisResult(Result):
    plot: Any = None
    target: Any = None           # the diagnosed model


@dataclass
class PruneResult(Result):
    model: Any = None            # the pruned (and re-normalized) model: one sparsity
    masks: dict[str, Any] = field(default_factory=dict)
    checkpoint: Any = None
    records: list[dict[str, Any]] = field(default_factory=list)  # a sweep: one per sparsity


@dataclass
class TrainResult(Result):
    checkpoints: list[Any] = field(default_factory=list)
    run_dir: Any = None


@dataclass
class EvaluationResult(Result):
    """data: one row per checkpoint (loss, top1, top5, sparsity, layer_sparsity)."""


@dataclass
class FlopsResult(Result):
    """data: per-layer and total parameters and MACs, dense and non-zero."""
