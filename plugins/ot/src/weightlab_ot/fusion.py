"""Optimal-transport fusion (Singh & Jaggi, *Model Fusion via Optimal Transport*, NeurIPS 2020,
Algorithm 1): align model B to model A channel space by channel space with a transport plan.

Convention (A = the reference, the paper's target; B = the model aligned to it; per free space
n_A = n_B = n channels, i indexes A's channels, j B's):

    C_ij = ‖a_i − b_j‖²
    T    = argmin { ⟨T, C⟩ − ε·H(T) :  T ≥ 0,  T·1 = μ,  Tᵀ·1 = ν },   μ = ν = 1/n (uniform)
    M    = n·T      (n × n, every row sums to 1: A's channel i receives Σ_j n·T_ij · b_j)
    U    = Mᵀ = n·Tᵀ

Producer-side entries (weight rows, biases, norm tensors) of B become M·W, consumer-side
entries (the next layers' input axes) W·U — the paper's W̃ = diag(1/β)·T'ᵀ·Ŵ and
Ŵ^{ℓ+1} = W^{ℓ+1}·T'·diag(1/β) with its plan T' = Tᵀ (it indexes the aligned model's neurons
first). ε = 0 (``reg=0``): exact EMD (network simplex, ``ot.emd``). With uniform marginals and
equal sizes its optimum is a vertex of the Birkhoff polytope — a permutation — so M is a
permutation matrix, U = M⁻¹ and the alignment is emitted as ``perms`` (B's function is
unchanged). ε > 0: entropic OT (``ot.sinkhorn``, log-domain) on C divided by ``cost_scale``;
T is dense, M a soft map and U = Mᵀ as in the paper (not M⁻¹): the aligned B approximates B.

Supports a_i, b_j (``basis``):

- ``weights``: channel i's rows of every producer-side entry of the space (weight rows with
  their kernels, biases, norm weights and biases; BatchNorm running statistics left out, as
  weight matching leaves them out), concatenated. Spaces are visited in the graph's
  topological order and B's other axes of those tensors (a layer's input axis) are first
  aligned with the maps already found — the paper's layer-by-layer procedure. An entry with
  an axis in a space not yet visited (the later producers of a residual-tied space read
  interior spaces that come after it) is left out of the cost, as its unaligned inputs would
  compare unmatched weights; if every entry of a space is in that case all are used as they are.
- ``activations``: the channels' features over calibration data (one pass, both models);
  C_ij = E[a_i²] + E[b_j²] − 2·E[a_i b_j], from the pooled second moments (FeatureStats).

With exact EMD and uniform marginals the squared norms in C are constant along rows and
columns, so ``basis=activations reg=0`` picks the permutation maximising Σ_i E[a_i b_π(i)] —
activation matching with ``similarity=inner``.

Spaces with ``groups > 1`` (attention heads moved as blocks) are left unaligned (identity)
in this version; ``info["unaligned"]`` lists them.
"""

from __future__ import annotations

import numpy as np
import torch
from weightlab.alignment import Alignment, permute_axis, transform_axis
from weightlab.errors import WeightlabError
from weightlab.graph.spaces import Entry, FeatureGraph, Space

EMD_MAX_ITER = 10_000_000  # network-simplex iterations at most (POT default: 100,000)
SINKHORN_TOL = 1e-5  # Sinkhorn stops when ‖Tᵀ1 − ν‖₂ < SINKHORN_TOL/n (relative to 1/n)
MARGINAL_TOL = 1e-3  # largest relative row/column-sum error of an accepted Sinkhorn plan


def transport_plan(cost_ab: torch.Tensor, reg: float = 0.0, *, max_iter: int = 10_000,
                   cost_scale: str = "max", what: str = "transport") -> torch.Tensor:
    """T (float64, n_A × n_B) with uniform marginals minimising ⟨T, C⟩ (``reg`` = 0, exact)
    or ⟨T, C/s⟩ − reg·H(T) (Sinkhorn; s = max, mean of C, or 1 for ``cost_scale``)."""
    import ot

    if not reg >= 0:
        raise WeightlabError(f"{what}: reg={reg}: expected 0 (exact) or a positive ε")
    if cost_scale not in ("max", "mean", "none"):
        raise WeightlabError(f"{what}: cost_scale={cost_scale!r}: expected max, mean or none")
    c = cost_ab.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(c).all():
        raise WeightlabError(f"{what}: the cost matrix has {int((~np.isfinite(c)).sum())} "
                             f"non-finite entries; the models' weights or features hold NaN/inf")
    mu = np.full(c.shape[0], 1.0 / c.shape[0])
    nu = np.full(c.shape[1], 1.0 / c.shape[1])
    if reg == 0:
        plan, log = ot.emd(mu, nu, c, numItermax=EMD_MAX_ITER, log=True)
        if log["result_code"] != 1:
            raise WeightlabError(f"{what}: exact transport stopped before the optimum "
                                 f"({log['warning']})")
        return torch.from_numpy(plan)
    scale = {"max": c.max(), "mean": c.mean(), "none": 1.0}[cost_scale]
    scale = scale if scale > 0 else 1.0
    plan = ot.sinkhorn(mu, nu, c / scale, reg, method="sinkhorn_log", numItermax=max_iter,
                       stopThr=SINKHORN_TOL / c.shape[1], warn=False)
    err = max(np.abs(plan.sum(1) / mu - 1).max(), np.abs(plan.sum(0) / nu - 1).max())
    if not np.isfinite(err) or err > MARGINAL_TOL:
        raise WeightlabError(f"{what}: Sinkhorn with reg={reg} did not converge in "
                             f"max_iter={max_iter} iterations (marginal error {err:.2g}); "
                             f"expected a larger max_iter or reg")
    return torch.from_numpy(plan)


def plan_to_map(plan: torch.Tensor) -> torch.Tensor:
    """The plan as B → A map: ``perm`` (perm[i] = B's channel sent to A's channel i) when
    M = n_A·T is a permutation matrix, else M itself (rows summing to 1)."""
    m = plan * plan.shape[0]
    perm = m.argmax(1)
    if m.shape[0] == m.shape[1] and torch.equal(perm.sort().values, torch.arange(len(perm))):
        onehot = torch.zeros_like(m)
        onehot[torch.arange(len(perm)), perm] = 1.0
        if float((m - onehot).abs().max()) < 1e-9:
            return perm
    return m


def squared_distances(xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """C_ij = ‖xa_i − xb_j‖² (float64; rows are channels)."""
    xa, xb = xa.double(), xb.double()
    sq = (xa * xa).sum(1)[:, None] + (xb * xb).sum(1)[None, :] - 2 * xa @ xb.T
    return sq.clamp_min(0)


def activation_cost(inner: torch.Tensor, n: int) -> torch.Tensor:
    """C_ij = E[a_i²] + E[b_j²] − 2 E[a_i b_j] from the joint second moment (2n × 2n, A's
    channels first) — E‖a_i − b_j‖² over the calibration observations."""
    d = inner.diagonal()
    return (d[:n, None] + d[None, n:] - 2 * inner[:n, n:]).clamp_min(0)


def _rows(w: torch.Tensor, e: Entry, size: int) -> torch.Tensor:
    """The space's ``size`` channels of entry ``e`` as rows (from ``e.offset`` in a packed
    tensor; a flattened channel's ``repeat`` columns stay in its row)."""
    w = w.narrow(e.axis, e.offset, size * e.repeat).movedim(e.axis, 0)
    return w.reshape(size, -1)


def _is_bn_stat(key: str) -> bool:
    return key.endswith((".running_mean", ".running_var"))


def align_tensor(al: Alignment, where: list[tuple[int, Entry]], w: torch.Tensor,
                 skip_axis: int, done: set[int], consumer: set[tuple[str, int]]
                 ) -> tuple[torch.Tensor, bool]:
    """B's tensor with its other axes mapped by the spaces in ``done`` as ``Alignment.apply``
    maps them (``where``: the tensor's (space id, entry) pairs over the free spaces); also
    whether one of those axes is in a free space not yet done."""
    pending = False
    for sid, e in where:
        if e.axis == skip_axis:
            continue
        if sid not in done:
            pending = True
        elif sid in al.perms:
            w = permute_axis(w, e.axis, al.perms[sid], e.repeat, e.offset)
        elif sid in al.merges:
            m, u = al.merges[sid]
            t = u.T if (e.key, e.axis) in consumer else m
            w = transform_axis(w, e.axis, t, e.repeat, e.offset)
    return w, pending


def weight_supports(space: Space, state_a: dict[str, torch.Tensor],
                    state_b: dict[str, torch.Tensor], al: Alignment, done: set[int],
                    consumer: set[tuple[str, int]], axes: dict[str, list[tuple[int, Entry]]]
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(A's supports, B's aligned supports, entries left out): n × D matrices of the
    producer-side rows of ``space``."""
    entries = [e for e in space.entries if (e.key, e.axis) not in consumer
               and not _is_bn_stat(e.key)]
    ready, waiting = [], []
    for e in entries:
        w, pending = align_tensor(al, axes[e.key], state_b[e.key].double(), e.axis, done,
                                  consumer)
        (waiting if pending else ready).append((e, w))
    use = ready or waiting
    if not use:
        raise WeightlabError(f"ot: channel space {space.id} has no producer-side tensor "
                             f"(weights, biases, norm parameters) to compare")
    xa = torch.cat([_rows(state_a[e.key].double(), e, space.size) for e, _ in use], 1)
    xb = torch.cat([_rows(w, e, space.size) for e, w in use], 1)
    return xa, xb, len(entries) - len(use)


def ot_fusion(graph: FeatureGraph, state_a: dict[str, torch.Tensor],
              state_b: dict[str, torch.Tensor], *, basis: str = "weights",
              stats: dict | None = None, reg: float = 0.0, max_iter: int = 10_000,
              cost_scale: str = "max") -> Alignment:
    """The alignment of B to A (see the module docstring); ``stats`` (from
    ``collect_feature_stats([A, B], …)``) is needed for ``basis="activations"``."""
    if basis not in ("weights", "activations"):
        raise WeightlabError(f"ot: basis={basis!r}: expected weights or activations")
    if basis == "activations" and stats is None:
        raise WeightlabError("ot: basis=activations needs feature statistics of both models")
    consumer, axes = graph.input_entries(), graph.param_axes()
    out = Alignment()
    done: set[int] = set()
    unaligned, left_out, total = [], {}, 0.0
    for space in graph.free_spaces():
        what = f"ot, channel space {space.id}"
        done.add(space.id)  # a skipped (grouped) space counts as done: identity
        if space.groups > 1:
            unaligned.append(space.id)
            continue
        if basis == "weights":
            xa, xb, dropped = weight_supports(space, state_a, state_b, out,
                                              done - {space.id}, consumer, axes)
            if dropped:
                left_out[space.id] = dropped
            cost = squared_distances(xa, xb)
        else:
            st = stats.get(space.id)
            if st is None:
                raise WeightlabError(f"{what} (produced by "
                                     f"{', '.join(space.producers) or 'no layer'}) has no "
                                     f"feature point to read")
            cost = activation_cost(st.inner(), space.size)
        plan = transport_plan(cost, reg, max_iter=max_iter, cost_scale=cost_scale, what=what)
        total += float((plan * cost.cpu()).sum())
        mapped = plan_to_map(plan)
        if mapped.dim() == 1:
            out.perms[space.id] = mapped
        else:
            m = mapped.float()
            out.merges[space.id] = (m, m.T.contiguous())
    out.info.update(matcher="ot", basis=basis, reg=reg, transport_cost=total,
                    soft_spaces=sorted(out.merges), unaligned=unaligned,
                    cost_entries_left_out=left_out)
    return out
