"""Merging N models of one architecture: align every model to the first, average with weights,
optionally re-normalize against the aligned endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weightlab.errors import IncompatibleModelsError, UsageError
from weightlab.interpolation import aligned_copy, aligned_pair, average_states, with_state


def check_compatible(states: Sequence[dict[str, torch.Tensor]],
                     names: Sequence[str] | None = None) -> None:
    """One line naming the first tensor that differs in name or shape (the one architecture
    check: merging, soups and diagnosis call it)."""
    names = list(names) if names else [f"model {i + 1}" for i in range(len(states))]
    ref = states[0]
    for s, name in zip(states[1:], names[1:]):
        for k in ref:
            if k not in s:
                raise IncompatibleModelsError(f"{name}: has no tensor {k!r} (present in "
                                              f"{names[0]}): different architectures")
            if s[k].shape != ref[k].shape:
                raise IncompatibleModelsError(
                    f"{name}: tensor {k!r} has shape {tuple(s[k].shape)} but {names[0]} has "
                    f"{tuple(ref[k].shape)}: different architectures or class counts")
        extra = [k for k in s if k not in ref]
        if extra:
            raise IncompatibleModelsError(f"{name}: extra tensor {extra[0]!r} not in "
                                          f"{names[0]}: different architectures")


def normalize_weights(weights: Sequence[float] | None, n: int, alpha: float | None
                      ) -> list[float]:
    if weights:
        if len(weights) != n:
            raise UsageError(f"weights={list(weights)} has {len(weights)} values for {n} "
                             f"models")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise UsageError(f"weights={list(weights)}: expected non-negative values with a "
                             f"positive sum")
        total = sum(weights)
        return [w / total for w in weights]
    if alpha is not None:
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"alpha={alpha} is outside [0, 1]")
        if n != 2:
            raise UsageError(f"alpha={alpha} applies to two models, got {n}; give weights "
                             f"for more")
        return [1.0 - alpha, alpha]
    return [1.0 / n] * n


@dataclass
class MergeResult:
    model: nn.Module
    aligned: list[nn.Module]
    alignments: list[Any]
    weights: list[float]
    info: dict[str, Any] = field(default_factory=dict)


def merge(models: Sequence[nn.Module], weights: Sequence[float], *, matcher: Any, graph: Any,
          match_data: Any = None, normalizer: Any = None, calibration: Any = None
          ) -> MergeResult:
    ref = models[0]
    naive = matcher is None or not matcher.needs_graph
    if not naive and (matcher.pairwise_only or matcher.joint) and len(models) != 2:
        raise UsageError(f"matcher {matcher.name} merges exactly two models, got "
                         f"{len(models)}")
    alignments = [None] * len(models) if naive else \
        [None] + [matcher.match(graph, ref, m, match_data) for m in models[1:]]
    if not naive and matcher.joint:  # both models expressed in the merged space
        aligned = aligned_pair(models[0], models[1], alignments[1], graph, weights)
    else:
        aligned = [ref] + [aligned_copy(m, al, graph)
                           for m, al in zip(models[1:], alignments[1:])]
    merged = with_state(ref, average_states([m.state_dict() for m in aligned], weights))
    if normalizer is not None:
        merged = normalizer.apply(merged, aligned, list(weights), calibration, graph)
    return MergeResult(merged, aligned, alignments, list(weights))
