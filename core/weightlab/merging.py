"""Merging N models of one architecture: align every model to the first (or all K into one space,
for a matcher with ``match_many``), average with weights, optionally re-normalize against the
aligned endpoints."""

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
    many = None if naive or matcher.joint else matcher.match_many(graph, models, match_data)
    if many is not None:  # every model mapped into one shared space by the matcher itself
        if len(many) != len(models):
            raise UsageError(f"matcher {matcher.name}: match_many returned {len(many)} "
                             f"alignments for {len(models)} models")
        alignments = list(many)
    else:
        alignments = [None] * len(models) if naive else \
            [None] + [matcher.match(graph, ref, m, match_data) for m in models[1:]]
    if not naive and matcher.joint:  # both models expressed in the merged space
        aligned = aligned_pair(models[0], models[1], alignments[1], graph, weights)
    else:
        aligned = [aligned_copy(m, al, graph) for m, al in zip(models, alignments)]
    merged = with_state(ref, average_states([m.state_dict() for m in aligned], weights))
    if normalizer is not None:
        merged = normalizer.apply(merged, aligned, list(weights), calibration, graph)
    return MergeResult(merged, aligned, alignments, list(weights))


def merge_from_base(base: nn.Module, models: Sequence[nn.Module], weights: Sequence[float], *,
                    method: Any, normalizer: Any = None, calibration: Any = None
                    ) -> MergeResult:
    """Merge models fine-tuned from ``base`` in place (no alignment: they share its basis).
    ``method`` (a :class:`weightlab.components.MergeMethod`) combines the floating-point
    parameters through the task vectors θ_k − θ_base. Buffers are running statistics of each
    model's activations, not learned directions, so they are not trimmed, dropped or rescaled:
    floating ones are averaged with ``weights`` (what a soup does; a normalizer such as
    reset_bn re-estimates them for the merged weights) and integer ones
    (num_batches_tracked) come from the base. The normalizer gets the fine-tuned models as
    references."""
    if method.pairwise_only and len(models) != 2:
        raise UsageError(f"merge method {method.name} merges exactly two models, got "
                         f"{len(models)}")
    names = [n for n, p in base.named_parameters(remove_duplicate=False) if p.is_floating_point()]
    states = [m.state_dict() for m in models]
    base_state = base.state_dict()
    merged = method.combine({k: base_state[k] for k in names},
                            [{k: s[k] for k in names} for s in states], list(weights))
    averaged = average_states(states, weights)
    tuned = set(names)
    state = {k: merged[k].to(t.dtype) if k in tuned else
             (averaged[k] if t.is_floating_point() else base_state[k].clone())
             for k, t in base_state.items()}
    out = with_state(base, state)
    if normalizer is not None:
        out = normalizer.apply(out, list(models), list(weights), calibration, None)
    return MergeResult(out, list(models), [None] * len(models), list(weights),
                       {"method": method.name})
