"""The registered merge methods: ``task_arithmetic``, ``ties``, ``dare``, ``model_stock``,
``slerp``. Each gets the base's and the fine-tuned models' floating-point parameters and the
per-model weights (see :class:`weightlab.components.MergeMethod`); the math is in
:mod:`.taskvec`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from weightlab.components import MergeMethod
from weightlab.params import param

State = dict  # parameter name → tensor

_SCALING = "λ, the scaling coefficient of the merged task vector"


def _below_one(p: float) -> None:
    if p >= 1.0:
        raise ValueError(f"{p} must be < 1 (every entry dropped leaves nothing to rescale)")


class TaskArithmetic(MergeMethod):
    """Task arithmetic (Ilharco et al., *Editing Models with Task Arithmetic*, ICLR 2023):
    θ = θ_base + λ Σ_k ω_k τ_k with τ_k = θ_k − θ_base and ω_k = K·w_k (1 each by default).
    λ = 1 adds the task vectors (the paper's sum, λ chosen on validation data); λ = 1/K is
    the uniform average of the models.

    Example::

        ta = registry.create("merge_methods", "task_arithmetic", {"scaling": 0.5})
        merged = ta.combine(base_params, [params_1, params_2], [0.5, 0.5])
    """

    name = "task_arithmetic"
    summary = "θ_base + λ·Σ task vectors (Ilharco et al. 2023)"

    @dataclass
    class Params:
        scaling: float = param(1.0, _SCALING)

    def combine(self, base: State, states: Sequence[State], weights: Sequence[float]) -> State:
        from weightlab_taskvec.taskvec import task_arithmetic

        return task_arithmetic(base, states, weights, self.params.scaling)


class Ties(MergeMethod):
    """TIES-merging (Yadav et al., *Resolving Interference When Merging Models*, NeurIPS
    2023): trim each task vector to its top-k% entries by magnitude (``density`` = k/100),
    elect the sign of each entry by the larger total mass sgn(Σ_k ω_k τ̂_k), average only the
    entries that agree with it (disjoint mean), θ = θ_base + λ·τ_m. ``scope``: the top-k% is
    taken over the whole task vector (``model``, the paper's code) or per tensor (``tensor``,
    as mergekit).

    Example::

        ties = registry.create("merge_methods", "ties", {"density": 0.2})
        merged = ties.combine(base_params, [params_1, params_2, params_3], [1 / 3] * 3)
    """

    name = "ties"
    summary = "trim to top-k%, elect signs, disjoint mean (Yadav et al. 2023)"

    @dataclass
    class Params:
        density: float = param(0.2, "fraction of each task vector kept by magnitude (k%/100)",
                               min=0.0, max=1.0)
        scaling: float = param(1.0, _SCALING)
        scope: str = param("model", "where the top-k% is taken", choices=("model", "tensor"))

    def combine(self, base: State, states: Sequence[State], weights: Sequence[float]) -> State:
        from weightlab_taskvec.taskvec import ties

        p = self.params
        return ties(base, states, weights, p.density, p.scaling, p.scope)


class Dare(MergeMethod):
    """DARE (Yu et al., *Language Models are Super Mario*, ICML 2024): drop each task-vector
    entry with probability p, rescale the survivors by 1/(1−p) (unbiased: E[τ̃] = τ), then
    combine by task arithmetic (θ_base + λ Σ_k ω_k τ̃_k) or TIES' sign election and disjoint
    mean (``combine=ties``, DARE-TIES: the random drop replaces the magnitude trim). The drops
    are seeded: one CPU generator, models and tensors in order.

    Example::

        dare = registry.create("merge_methods", "dare", {"p": 0.9, "seed": 0})
        merged = dare.combine(base_params, [params_1, params_2], [0.5, 0.5])
    """

    name = "dare"
    summary = "drop task-vector entries with rate p, rescale by 1/(1−p) (Yu et al. 2024)"

    @dataclass
    class Params:
        p: float = param(0.9, "drop rate", min=0.0, max=1.0, check=_below_one)
        seed: int = param(0, "seed of the random drops")
        combine: str = param("arithmetic", "how the sparsified task vectors are combined",
                             choices=("arithmetic", "ties"))
        scaling: float = param(1.0, _SCALING)

    def combine(self, base: State, states: Sequence[State], weights: Sequence[float]) -> State:
        from weightlab_taskvec.taskvec import dare

        p = self.params
        return dare(base, states, weights, p.p, p.seed, p.combine, p.scaling)


class ModelStock(MergeMethod):
    """Model Stock (Jang, Yun & Han, *Model Stock: All We Need Is Just a Few Fine-Tuned
    Models*, ECCV 2024): per tensor, θ = t·θ_avg + (1 − t)·θ_base with
    t = k·cosθ / ((k − 1)·cosθ + 1), θ the angle between the k task vectors (the mean of the
    pairwise cosines) and θ_avg the weighted average of the fine-tuned models. cosθ is clamped
    to [0, 1]; a tensor some model left unchanged (no angle) stays at the base.

    Example::

        stock = registry.create("merge_methods", "model_stock")
        merged = stock.combine(base_params, [params_1, params_2], [0.5, 0.5])
    """

    name = "model_stock"
    summary = "interpolate the average towards the base by the task vectors' angle (Jang 2024)"

    def combine(self, base: State, states: Sequence[State], weights: Sequence[float]) -> State:
        from weightlab_taskvec.taskvec import model_stock

        return model_stock(base, states, weights)


class Slerp(MergeMethod):
    """SLERP of two models, per tensor (as mergekit): sin((1−t)Ω)/sin Ω · v_1 +
    sin(tΩ)/sin Ω · v_2 with Ω the angle between v_1 and v_2 — the task vectors (then
    θ = θ_base + slerp(τ_1, τ_2, t); ``space=task``) or the weights themselves
    (``space=weights``, mergekit's slerp). Nearly parallel vectors (cos Ω > 0.9995) and zero
    ones are interpolated linearly. The per-model weights are not used: ``t`` is the position.

    Example::

        slerp = registry.create("merge_methods", "slerp", {"t": 0.5})
        merged = slerp.combine(base_params, [params_1, params_2], [0.5, 0.5])
    """

    name = "slerp"
    summary = "spherical interpolation of two task vectors (or weights) per tensor"
    pairwise_only = True

    @dataclass
    class Params:
        t: float = param(0.5, "position between model 1 (0) and model 2 (1)", min=0.0, max=1.0)
        space: str = param("task", "interpolate the task vectors or the weights",
                           choices=("task", "weights"))

    def combine(self, base: State, states: Sequence[State], weights: Sequence[float]) -> State:
        from weightlab_taskvec.taskvec import slerp_states

        return slerp_states(base, states, self.params.t, self.params.space)


METHODS = [TaskArithmetic, Ties, Dare, ModelStock, Slerp]
