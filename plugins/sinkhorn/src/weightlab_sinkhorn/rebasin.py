"""Sinkhorn re-basin (Peña, Medeiros, Tuytelaars & Ballester, "Re-basin via implicit Sinkhorn
differentiation", CVPR 2023).

Per free channel space s of B, a matrix of logits L_s (n × n) defines a soft permutation

    P̃_s = Sinkhorn(L_s / τ)     (log domain: alternate row and column log-normalizations)

a doubly stochastic matrix that tends to the permutation maximizing Σ_i L_s[i, π(i)] as
τ → 0. B's tensors are mapped as a permutation would map them, with P̃ in place of P: every
entry of s (producer rows and consumer columns alike) becomes P̃_s applied along its axis, so
a layer weight becomes P̃_out · W_B · P̃_inᵀ. The logits are learned by Adam on

- ``weight``:   L_WM = −Σ_tensors ⟨W_A, P̃(W_B)⟩ / (‖θ_A‖·‖θ_B‖)   (no data; for hard P it is
  Git Re-Basin's weight-matching objective, and ‖θ_A − P(θ_B)‖² up to a constant);
- ``midpoint``: L_MID = the cross-entropy of the model at θ_mid = ½(θ_A + P̃(θ_B)) on
  calibration batches (one batch a step), through ``torch.func.functional_call``.

Gradients flow through the unrolled Sinkhorn iterations by autograd; the paper's implicit
differentiation computes the same gradients (at convergence) with memory independent of the
number of iterations — a memory optimization this implementation does not need for the models
it targets. The final hard permutation of each space is the linear assignment maximizing the
learned logits (the τ → 0 limit of the plan; Hungarian via core's ``solve_assignment``).

Attention head spaces (``groups`` > 1) stay identity: a soft relaxation of "whole heads move,
channels move within heads" is not implemented here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from weightlab.alignment import Alignment, transform_axis
from weightlab.graph.spaces import FeatureGraph
from weightlab.matching.assignment import solve_assignment
from weightlab.matching.weight import is_bn_stat


def sinkhorn(logits: torch.Tensor, tau: float = 1.0, iterations: int = 20) -> torch.Tensor:
    """The doubly stochastic matrix exp(log P) with log P = logits/τ alternately
    row- and column-normalized ``iterations`` times in the log domain (rows first; the last
    step normalizes columns, so columns sum to 1 exactly and rows to 1 at convergence)."""
    log_p = logits / tau
    for _ in range(iterations):
        log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=0, keepdim=True)
    return log_p.exp()


def learned_spaces(graph: FeatureGraph) -> list[Any]:
    """The spaces whose soft permutation is learned: free spaces without attention heads."""
    return [s for s in graph.free_spaces() if s.groups == 1]


def soft_apply(graph: FeatureGraph, spaces: list[Any], plans: dict[int, torch.Tensor],
               state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every entry of every space in ``spaces`` mapped by its plan P̃ along the
    entry's axis (differentiable; P̃ = P gives exactly ``Alignment(perms).apply``)."""
    out = dict(state)
    for s in spaces:
        p = plans[s.id]
        for e in s.entries:
            out[e.key] = transform_axis(out[e.key], e.axis, p, e.repeat, e.offset)
    return out


def weight_score(graph: FeatureGraph, state_a: dict[str, torch.Tensor],
                 state_b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ ⟨W_A, W_B⟩ over the tensors the free spaces touch, BatchNorm running statistics left
    out (as in core's ``weight_objective``); differentiable, in the tensors' dtype."""
    total = None
    for key in graph.param_axes():
        if is_bn_stat(key):
            continue
        term = (state_a[key] * state_b[key]).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def initial_logits(spaces: list[Any], init: str, tau: float, device: torch.device,
                   dtype: torch.dtype, start: Alignment | None = None
                   ) -> dict[int, torch.Tensor]:
    """Zeros (the uniform plan), or ``2·τ·ln n`` on the entries of ``start``'s permutation
    (the weight-matching solution): a plan putting about 1 − 1/n on each matched pair."""
    out = {}
    for s in spaces:
        x = torch.zeros(s.size, s.size, device=device, dtype=dtype)
        if init == "weight" and start is not None and s.size > 1:
            perm = start.perms[s.id].to(device)
            x[torch.arange(s.size, device=device), perm] = 2.0 * tau * math.log(s.size)
        out[s.id] = x.requires_grad_(True)
    return out


def _batches(data: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch[0], batch[1]
        if empty:
            raise ValueError("the calibration loader yields no batches")


def sinkhorn_rebasin(graph: FeatureGraph, ref: torch.nn.Module, other: torch.nn.Module, *,
                     objective: str = "weight", tau: float = 1.0, iterations: int = 20,
                     steps: int = 200, lr: float = 0.1, seed: int = 0, init: str = "zero",
                     data: Any = None) -> Alignment:
    """The alignment of ``other`` (B) to ``ref`` (A): learned logits per free space (see the
    module docstring), then the hard permutations maximizing them. ``info`` records the loss
    before and after (soft), and the weight objective of the hard result."""
    from torch.func import functional_call
    from weightlab.matching.weight import weight_matching, weight_objective

    torch.manual_seed(seed)
    sa, sb = ref.state_dict(), other.state_dict()
    first = next(iter(sa.values()))
    device = first.device
    dtype = first.dtype if first.is_floating_point() else torch.float32
    spaces = learned_spaces(graph)
    start = weight_matching(graph, sa, sb, seed=seed) if init == "weight" else None
    logits = initial_logits(spaces, init, tau, device, dtype, start)
    a = {k: v.detach() for k, v in sa.items()}
    b = {k: v.detach().to(device) for k, v in sb.items()}
    if objective == "weight":
        norm = math.sqrt(float(weight_score(graph, a, a)) * float(weight_score(graph, b, b)))
        norm = norm or 1.0

        def loss_fn() -> torch.Tensor:
            plans = {i: sinkhorn(x, tau, iterations) for i, x in logits.items()}
            return -weight_score(graph, a, soft_apply(graph, spaces, plans, b)) / norm
    else:
        batches = _batches(data)
        net = ref

        def loss_fn() -> torch.Tensor:
            plans = {i: sinkhorn(x, tau, iterations) for i, x in logits.items()}
            pb = soft_apply(graph, spaces, plans, b)
            mid = {k: (0.5 * (v + pb[k]) if v.is_floating_point() else v)
                   for k, v in a.items()}
            x, y = next(batches)
            out = functional_call(net, mid, (x.to(device),))
            return torch.nn.functional.cross_entropy(out, y.to(device))

    opt = torch.optim.Adam(list(logits.values()), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    perms = {s.id: torch.arange(s.size) for s in graph.free_spaces()}
    for s in spaces:
        perms[s.id] = solve_assignment(logits[s.id].detach(),
                                       f"sinkhorn re-basin, channel space {s.id}")
    out = Alignment(perms)
    out.info.update(
        matcher="sinkhorn", objective_name=objective, steps=steps,
        loss_first=losses[0] if losses else None, loss_last=losses[-1] if losses else None,
        heads_left_identity=[s.id for s in graph.free_spaces() if s.groups > 1],
        objective=weight_objective(graph, sa, out.apply(graph, sb)))
    return out
