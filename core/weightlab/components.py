"""Component base classes, one per kind. A component is a class with a ``name``, a one-line
``summary``, a docstring and a ``Params`` dataclass (see :mod:`weightlab.params`).

Heavy imports (torch) stay inside methods so that listing components stays cheap.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from weightlab.params import NoParams, build_params, describe, to_dict

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    import torch
    from torch import nn

    from weightlab.data.loaders import DeviceLoader

KINDS = ("models", "datasets", "matchers", "normalizers", "pruners", "ensembles", "executors",
         "merge_methods")


class Component:
    """Base of every component: holds validated ``params``."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any = None, **values: Any):
        if params is None:
            params = build_params(self.Params, values, prefix=f"{self.name}.")
        self.params = params

    @classmethod
    def create(cls, values: dict[str, Any] | None = None) -> Component:
        return cls(build_params(cls.Params, values, prefix=f"{cls.name}."))

    @classmethod
    def parameters(cls) -> list[dict[str, Any]]:
        return describe(cls.Params)

    def params_dict(self) -> dict[str, Any]:
        return to_dict(self.params)


class Model(Component):
    """A model family. ``pattern`` (a regex whose named groups are parameter values) lets one
    component answer for many names, e.g. ``cifar_resnet(?P<depth>\\d+)`` for cifar_resnet20.

    Example::

        m = registry.model("cifar_resnet20_4x")      # Model instance, params parsed from name
        net = m.build(input_shape=(3, 32, 32), num_classes=10)
    """

    kind = "models"
    pattern: ClassVar[str | None] = None
    examples: ClassVar[tuple[str, ...]] = ()
    default_input_shape: ClassVar[tuple[int, ...]] = (3, 32, 32)
    #: state-dict layouts of other codebases that ``weightlab import`` accepts: codebase name →
    #: ordered ``(regex, replacement)`` rules renaming its keys to this family's (data, not
    #: code; see :mod:`weightlab.statekeys`)
    foreign_layouts: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}

    @classmethod
    def params_from_name(cls, name: str) -> dict[str, Any] | None:
        """Parameter values implied by ``name``, or None when this family does not match it."""
        if name == cls.name:
            return {}
        if cls.pattern and (m := re.fullmatch(cls.pattern, name)):
            return cls.name_groups_to_params({k: v for k, v in m.groupdict().items()
                                              if v is not None})
        return None

    @classmethod
    def name_groups_to_params(cls, groups: dict[str, str]) -> dict[str, Any]:
        return groups

    def build(self, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        raise NotImplementedError


class Dataset(Component):
    """An image classification dataset: ``load(split)`` returns uint8 NCHW images and labels.

    Class attributes describe it: ``num_classes``, ``input_shape`` (C, H, W), ``mean`` and
    ``std`` (per channel, on the 0–1 scale), ``augment`` ("crop_flip" or None), ``classes``.
    """

    kind = "datasets"
    num_classes: ClassVar[int] = 10
    input_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    mean: ClassVar[tuple[float, ...]] = (0.5,)
    std: ClassVar[tuple[float, ...]] = (0.5,)
    augment: ClassVar[str | None] = None
    needs_data_dir: ClassVar[bool] = True
    layout: ClassVar[str] = ""

    def load(self, data_dir: Any, split: str, download: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (N, C, H, W) images and int64 labels; a ``streaming`` dataset returns a
        map-style dataset of PIL images instead (see :meth:`transform`)."""
        raise NotImplementedError

    def transform(self, train: bool) -> Any:
        """Streaming datasets: the per-image transform to a uint8 (C, H, W) tensor of
        ``input_shape`` — with random augmentation for training (``train``), deterministic for
        evaluation and calibration."""
        raise NotImplementedError

    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]


class Matcher(Component):
    """Aligns ``other`` to ``ref``; returns a :class:`weightlab.alignment.Alignment`.

    Aligning never changes a model's function: ``alignment.apply(graph, other)`` computes the
    same outputs as ``other``. What the platform reads before calling ``match``:

    - ``needs_data``: ``match`` gets a calibration loader (activation statistics).
    - ``needs_graph``: False only for a matcher that never aligns (``identity``: naive
      averaging); the platform then traces no graph and calls no ``match``.
    - ``joint``: ``match`` returns a joint alignment (ZipIt!, CCA) whose
      ``express(graph, [ref, other])`` gives both models in the merged space; the merge is
      the average of those expressions. Joint matchers merge exactly two models.
    - ``pairwise_only``: refused up front for more than two models (implied by ``joint``).
    - ``match_many``: a matcher that aligns K models jointly into one space defines it;
      ``merge`` then calls it instead of ``match`` against the first model.

    Example::

        class Mine(Matcher):
            name, summary = "mine", "my alignment"
            def match(self, graph, ref, other, data=None):
                return Alignment.identity(graph)
    """

    kind = "matchers"
    needs_data: ClassVar[bool] = False
    needs_graph: ClassVar[bool] = True
    joint: ClassVar[bool] = False
    pairwise_only: ClassVar[bool] = False

    def match(self, graph: Any, ref: nn.Module, other: nn.Module,
              data: DeviceLoader | None = None) -> Any:
        raise NotImplementedError

    def match_many(self, graph: Any, models: Sequence[nn.Module],
                   data: DeviceLoader | None = None) -> list[Any] | None:
        """Optional: align all K models jointly (MergeMany, C2M3). Returns one alignment per
        model, each mapping that model into one shared space (the merge averages them; None
        stands for the identity), or None — the default — when the matcher aligns pairs only;
        ``merge`` then aligns every model to the first with ``match``."""
        return None


class Normalizer(Component):
    """Corrects a model's per-channel statistics using reference models (REPAIR and friends).

    ``references`` are the endpoint models (merging) or the dense original (pruning);
    ``weights`` their interpolation weights. Returns a plain model of the same architecture.
    """

    kind = "normalizers"
    needs_data: ClassVar[bool] = True

    def apply(self, model: nn.Module, references: Sequence[nn.Module], weights: Sequence[float],
              data: DeviceLoader | None, graph: Any = None) -> nn.Module:
        raise NotImplementedError


class Pruner(Component):
    """Chooses which weights to remove. ``prune`` returns the new masks (parameter name →
    bool tensor, True = kept) and may update surviving weights (the OBS update).

    A pruner whose statistics do not depend on the sparsity (scores, a Fisher inverse) returns
    them from ``analyze``; a sweep over sparsities (:func:`weightlab.pruning.sweep`) calls it
    once on the dense model and passes the result to every ``prune(..., analysis=...)``. The
    keyword is passed only when ``analyze`` returned something, so a pruner that keeps the
    default (None) may define ``prune(model, sparsity, masks, data=None)`` alone.

    Example::

        analysis = pruner.analyze(net, masks={}, data=calibration)   # once
        for s in (0.5, 0.9):
            masks = pruner.prune(copy.deepcopy(net), s, {}, calibration, analysis=analysis)
    """

    kind = "pruners"
    needs_data: ClassVar[bool] = False
    # after ``prune``: what the pruner wants shown (``weightlab prune`` prints "stages",
    # "steps" and "plan" tables when present; kept in the run's JSON as ``pruner_report``)
    last_report: dict[str, Any] | None = None

    def analyze(self, model: nn.Module, masks: dict[str, torch.Tensor],
                data: DeviceLoader | None = None) -> Any:
        """The statistics of the model that do not depend on the sparsity, computed once for a
        sweep; None (the default) when there are none. May zero the weights ``masks`` remove
        (as ``prune`` does), must change nothing else."""
        return None

    def prune(self, model: nn.Module, sparsity: float, masks: dict[str, torch.Tensor],
              data: DeviceLoader | None = None, analysis: Any = None
              ) -> dict[str, torch.Tensor]:
        """Masks at ``sparsity`` for ``model`` (pruned in place); ``analysis``, when given, is
        what ``analyze`` returned for this same model state and masks."""
        raise NotImplementedError


class Ensemble(Component):
    """Combines models of one architecture (model soups, logit ensembles).

    ``combine`` receives the ingredients (models in eval mode), a held-out loader (from the
    training set, for selection; None unless ``needs_data``), and by keyword the ingredients'
    masks (parameter name → bool tensor, True = kept; empty dicts for dense models), a
    calibration loader (for BatchNorm statistics) and their names (for messages). After it,
    ``shared_mask`` holds the mask the combined model keeps (None: dense) and ``info`` may
    hold ``chosen``, the 1-based indices of the ingredients used (default: all).
    ``saveable = False`` marks a result that is a module to evaluate but not one
    checkpoint (the logit ensemble).

    Example::

        class Median(Ensemble):
            name, summary = "median", "element-wise median of the ingredients"
            def combine(self, models, heldout=None, *, masks=None, calibration=None,
                        names=None):
                from weightlab.interpolation import with_state
                import torch
                states = [m.state_dict() for m in models]
                return with_state(models[0], {k: torch.stack([s[k] for s in states]).median(0)
                                              .values for k in states[0]})
    """

    kind = "ensembles"
    needs_data: ClassVar[bool] = False
    saveable: ClassVar[bool] = True
    shared_mask: dict[str, torch.Tensor] | None = None
    info: dict[str, Any] | None = None

    def combine(self, models: Sequence[nn.Module], heldout: DeviceLoader | None = None, *,
                masks: Sequence[dict[str, torch.Tensor]] | None = None,
                calibration: DeviceLoader | None = None,
                names: Sequence[str] | None = None) -> nn.Module:
        raise NotImplementedError


class Executor(Component):
    """Where independent steps run: in this process, in local processes, on a Ray cluster, as
    SLURM jobs. ``submit(spec, run_dir)`` starts one step spec (see
    :mod:`weightlab.executors.spec`) and returns a ``concurrent.futures.Future`` of its result;
    every executor runs :func:`weightlab.executors.step.run_step`, so all produce the same
    files. ``close()`` releases what the executor started.

    Example::

        with registry.create("executors", "local", {"workers": 2}) as ex:
            results = run_graph(specs, deps, ex, run_dir)
    """

    kind = "executors"

    def start(self) -> None:
        """Begin what submitting needs — a cluster connection, workers that have imported
        torch and weightlab — without waiting for it, so that it overlaps the caller's own
        work (loading and validating a recipe). Callers that will submit call it as early as
        they know; ``submit`` works without it. Default: nothing to begin."""

    def submit(self, spec: dict[str, Any], run_dir: str) -> Any:
        raise NotImplementedError

    def submit_many(self, specs: Sequence[dict[str, Any]], run_dir: str) -> list[Any]:
        """Several ready steps at once (a SLURM executor makes them one job array)."""
        return [self.submit(s, run_dir) for s in specs]

    def close(self) -> None:
        """Release workers, connections, clusters this executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MergeMethod(Component):
    """Combines models fine-tuned from one base through their task vectors τ_k = θ_k − θ_base
    (task arithmetic, TIES, DARE, Model Stock, SLERP).

    ``combine(base, states, weights)`` receives the base's and each model's floating-point
    *parameters* (name → tensor, same keys and shapes) and the per-model weights (sum 1;
    uniform unless the caller gives others) and returns the merged parameters. Buffers
    (BatchNorm running statistics) never reach it: the platform averages them with the weights
    and takes integer buffers from the base (:func:`weightlab.merging.merge_from_base`).
    ``pairwise_only``: the method merges exactly two models (SLERP).

    Example::

        class Sum(MergeMethod):
            name, summary = "sum", "θ_base + Σ_k τ_k"
            def combine(self, base, states, weights):
                return {k: b + sum(s[k] - b for s in states) for k, b in base.items()}
    """

    kind = "merge_methods"
    pairwise_only: ClassVar[bool] = False

    def combine(self, base: dict[str, torch.Tensor], states: Sequence[dict[str, torch.Tensor]],
                weights: Sequence[float]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


BASES: dict[str, type[Component]] = {
    "models": Model, "datasets": Dataset, "matchers": Matcher,
    "normalizers": Normalizer, "pruners": Pruner, "ensembles": Ensemble,
    "executors": Executor, "merge_methods": MergeMethod,
}
