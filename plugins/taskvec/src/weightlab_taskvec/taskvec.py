"""Task-vector merging of models fine-tuned from one base, one function per step.

Every function takes state dicts (parameter name → tensor) of the base θ_b and the fine-tuned
models θ_k, works in float64 on the tensors' device and returns float64 tensors; the caller
casts back. τ_k = θ_k − θ_b is model k's task vector. Per-model weights w_k (sum 1) enter as
relative weights ω_k = K·w_k (mean 1), so uniform weights give each paper's formula exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

State = dict[str, torch.Tensor]


def task_vectors(base: State, states: Sequence[State]) -> list[State]:
    """τ_k = θ_k − θ_b, in float64."""
    return [{k: s[k].double() - b.double() for k, b in base.items()} for s in states]


def relative(weights: Sequence[float]) -> list[float]:
    """ω_k = K·w_k: 1 each for uniform weights."""
    return [len(weights) * float(w) for w in weights]


def add_scaled(base: State, tau: State, scaling: float) -> State:
    """θ = θ_b + λ·τ."""
    return {k: b.double() + scaling * tau[k] for k, b in base.items()}


def weighted_sum(taus: Sequence[State], omegas: Sequence[float]) -> State:
    """Σ_k ω_k τ_k."""
    return {k: sum(o * t[k] for t, o in zip(taus, omegas)) for k in taus[0]}


def task_arithmetic(base: State, states: Sequence[State], weights: Sequence[float],
                    scaling: float) -> State:
    """Ilharco et al. 2023: θ = θ_b + λ Σ_k ω_k τ_k (λ = 1/K: the uniform average)."""
    taus = task_vectors(base, states)
    return add_scaled(base, weighted_sum(taus, relative(weights)), scaling)


# ---- TIES-merging (Yadav et al. 2023) ------------------------------------------------------

def trim(tau: State, density: float, scope: str = "model") -> State:
    """Keep the ⌈density·n⌉ largest |τ| entries (ties at the threshold kept), zero the rest;
    n counts the whole task vector (``scope="model"``, the paper's code) or each tensor
    (``"tensor"``, as mergekit)."""
    if density >= 1.0:
        return dict(tau)
    if density <= 0.0:
        return {k: torch.zeros_like(t) for k, t in tau.items()}

    def threshold(mags: torch.Tensor) -> torch.Tensor:
        keep = math.ceil(density * mags.numel())
        return torch.kthvalue(mags, mags.numel() - keep + 1).values  # the keep-th largest

    if scope == "model":
        mags = torch.cat([t.abs().flatten() for t in tau.values()])
        cut = dict.fromkeys(tau, threshold(mags)) if mags.numel() else {}
    else:
        cut = {k: threshold(t.abs().flatten()) for k, t in tau.items() if t.numel()}
    return {k: torch.where(t.abs() >= cut[k], t, torch.zeros_like(t)) if t.numel() else t
            for k, t in tau.items()}


def elect_signs(taus: Sequence[State], omegas: Sequence[float]) -> State:
    """γ = sgn(Σ_k ω_k τ̂_k): the sign with the larger total mass, per entry."""
    return {k: torch.sign(v) for k, v in weighted_sum(taus, omegas).items()}


def disjoint_mean(taus: Sequence[State], signs: State, omegas: Sequence[float]) -> State:
    """τ_m = Σ_{k∈A} ω_k τ̂_k / Σ_{k∈A} ω_k with A = {k : sgn(τ̂_k) = γ} per entry (zero where
    A is empty: no model moved that entry in the elected direction)."""
    out = {}
    for key, gamma in signs.items():
        num = torch.zeros_like(gamma)
        den = torch.zeros_like(gamma)
        for t, o in zip(taus, omegas):
            agree = (torch.sign(t[key]) == gamma) & (gamma != 0)
            num += torch.where(agree, o * t[key], 0.0)
            den += agree.double() * o
        out[key] = torch.where(den > 0, num / den.clamp_min(1e-300), 0.0)
    return out


def ties_combine(base: State, taus: Sequence[State], weights: Sequence[float],
                 scaling: float) -> State:
    """Elect signs, take the disjoint mean, add λ·τ_m to the base (TIES steps 2 and 3)."""
    omegas = relative(weights)
    return add_scaled(base, disjoint_mean(taus, elect_signs(taus, omegas), omegas), scaling)


def ties(base: State, states: Sequence[State], weights: Sequence[float], density: float,
         scaling: float, scope: str = "model") -> State:
    """Trim each τ_k to its top ``density`` by magnitude, elect signs, disjoint mean, scale."""
    taus = [trim(t, density, scope) for t in task_vectors(base, states)]
    return ties_combine(base, taus, weights, scaling)


# ---- DARE (Yu et al. 2024) -----------------------------------------------------------------

def dare_drop(tau: State, p: float, generator: torch.Generator) -> State:
    """Drop each entry with probability p, rescale the survivors by 1/(1−p): E[τ̃] = τ. The
    Bernoulli draws come from a CPU generator (the same on every device)."""
    if p == 0.0:
        return dict(tau)
    out = {}
    for k, t in tau.items():
        keep = torch.rand(t.shape, generator=generator, dtype=torch.float64) >= p
        out[k] = torch.where(keep.to(t.device), t / (1.0 - p), torch.zeros_like(t))
    return out


def dare(base: State, states: Sequence[State], weights: Sequence[float], p: float, seed: int,
         combine: str, scaling: float) -> State:
    """DARE-sparsify every τ_k (one generator seeded with ``seed``, models and tensors in
    order), then combine by task arithmetic or TIES' sign election and disjoint mean."""
    gen = torch.Generator().manual_seed(seed)
    taus = [dare_drop(t, p, gen) for t in task_vectors(base, states)]
    if combine == "ties":
        return ties_combine(base, taus, weights, scaling)
    return add_scaled(base, weighted_sum(taus, relative(weights)), scaling)


# ---- Model Stock (Jang et al. 2024) --------------------------------------------------------

def model_stock_ratio(cos: float | torch.Tensor, k: int) -> torch.Tensor:
    """t = k·cosθ / ((k − 1)·cosθ + 1), cosθ clamped to [0, 1] (the paper's geometry: fine-tuned
    weights at equal angles below 90° around their centre)."""
    c = torch.as_tensor(cos, dtype=torch.float64).clamp(0.0, 1.0)
    return k * c / ((k - 1) * c + 1)


def mean_pairwise_cosine(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean cosine over pairs i < j (0 when a vector is zero: no angle)."""
    flat = torch.stack([v.flatten() for v in vectors])
    norms = flat.norm(dim=1)
    if bool((norms == 0).any()):
        return torch.zeros((), dtype=flat.dtype, device=flat.device)
    unit = flat / norms[:, None]
    gram = unit @ unit.T
    i, j = torch.triu_indices(len(vectors), len(vectors), 1)
    return gram[i, j].mean()


def model_stock(base: State, states: Sequence[State], weights: Sequence[float]) -> State:
    """Per tensor: θ = t·θ_avg + (1 − t)·θ_b with θ_avg = Σ_k w_k θ_k and t from the mean angle
    between the task vectors."""
    taus = task_vectors(base, states)
    out = {}
    for key, b in base.items():
        t = model_stock_ratio(mean_pairwise_cosine([tau[key] for tau in taus]), len(states))
        avg = sum(w * s[key].double() for s, w in zip(states, weights))
        out[key] = t.to(b.device) * avg + (1 - t.to(b.device)) * b.double()
    return out


# ---- SLERP ---------------------------------------------------------------------------------

DOT_THRESHOLD = 0.9995  # mergekit's: nearly parallel vectors are interpolated linearly


def slerp(v0: torch.Tensor, v1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors as flat vectors (mergekit's):
    sin((1−t)Ω)/sin Ω · v0 + sin(tΩ)/sin Ω · v1 with cos Ω = v̂0·v̂1; linear when the vectors
    are nearly parallel or one is zero (no angle)."""
    v0, v1 = v0.double(), v1.double()
    n0, n1 = v0.norm(), v1.norm()
    if float(n0) == 0.0 or float(n1) == 0.0:
        return (1 - t) * v0 + t * v1
    dot = float((v0 / n0 * (v1 / n1)).sum().clamp(-1.0, 1.0))
    if abs(dot) > DOT_THRESHOLD:
        return (1 - t) * v0 + t * v1
    omega = math.acos(dot)
    s0 = math.sin((1 - t) * omega) / math.sin(omega)
    s1 = math.sin(t * omega) / math.sin(omega)
    return s0 * v0 + s1 * v1


def slerp_states(base: State, states: Sequence[State], t: float, space: str) -> State:
    """Per tensor: θ_b + slerp(τ_1, τ_2, t) (``space="task"``) or slerp(θ_1, θ_2, t)
    (``"weights"``, mergekit's slerp)."""
    a, b = states
    if space == "weights":
        return {k: slerp(a[k], b[k], t) for k in base}
    return {k: base[k].double() + slerp(a[k].double() - base[k].double(),
                                         b[k].double() - base[k].double(), t) for k in base}
