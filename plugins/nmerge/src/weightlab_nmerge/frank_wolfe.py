"""C2M3 (Crisostomi et al., NeurIPS 2024): cycle-consistent K-model matching by Frank–Wolfe on
the Birkhoff polytope (the authors' ``frank_wolfe_synchronized_matching``).

Each model k has a doubly stochastic C×C matrix P_k^s per free space s, mapping it into a
shared universe; U_k = T_{P_k}(θ_k) applies P_k^s along every axis of s. The objective

    f(P) = Σ_{i<j} Σ_tensors ⟨U_i, U_j⟩ = Σ_tensors ½ (‖Σ_k U_k‖² − Σ_k ‖U_k‖²)

is multilinear in each tensor's factors. A Frank–Wolfe step moves every P toward a vertex S
(a permutation), P' = (1 − γ)P + γS, so with m factors on a tensor

    U_k(γ) = Σ_{V ⊆ factors} (1 − γ)^{m−|V|} γ^{|V|} S_V(Q_V),

where Q_V is the tensor with P applied on the factors outside V (kept up to date) and S_V
applies the vertex permutations on V — index operations, no matrix products. f(γ) is then an
exact polynomial of degree 2m, maximised exactly on [0, 1].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from numpy.polynomial import Polynomial
from weightlab.alignment import Alignment, permute_axis, transform_axis
from weightlab.errors import UsageError
from weightlab.matching.assignment import solve_assignment
from weightlab.matching.weight import is_bn_stat, rows

INITS = ("barycenter", "identity", "mergemany")


def sinkhorn_knopp(m: torch.Tensor, tol: float = 1e-8, max_iter: int = 10_000) -> torch.Tensor:
    """The doubly stochastic matrix of a positive ``m``: rows and columns normalised in turn
    until every row and column sums to 1 within ``tol`` (the authors' ``sinkhorn_knopp``,
    which adds 1e-6 first)."""
    m = m + 1e-6
    for _ in range(max_iter):
        m = m / m.sum(1, keepdim=True)
        m = m / m.sum(0, keepdim=True)
        if bool(((m.sum(0) - 1).abs() < tol).all() and ((m.sum(1) - 1).abs() < tol).all()):
            break
    return m


def perturbed_barycenter(n: int, gen: torch.Generator) -> torch.Tensor:
    """The authors' "sinkhorn" start: the Birkhoff barycenter 1/n·11ᵀ plus uniform noise in
    [0, 0.01/n), made doubly stochastic again (the noise breaks the symmetry between
    channels; at the exact barycenter every vertex direction looks alike)."""
    return sinkhorn_knopp(torch.full((n, n), 1.0 / n, dtype=torch.float64)
                          + torch.rand(n, n, generator=gen, dtype=torch.float64) * 0.01 / n)


class _Tensors:
    """For every model, every tensor a permuted space touches, and every subset V of that
    tensor's factors (bitmask): Q_V = the tensor with P applied on the factors outside V."""

    def __init__(self, graph: Any, states: Sequence[dict[str, torch.Tensor]],
                 include_bn_stats: bool, dtype: torch.dtype):
        self.spaces = [s for s in graph.free_spaces() if s.groups == 1]
        ids = {s.id for s in self.spaces}
        self.factors: dict[str, list] = {}
        for key, entries in graph.param_axes().items():
            if not include_bn_stats and is_bn_stat(key):
                continue
            kept = [(sid, e) for sid, e in entries if sid in ids and not e.per_group]
            if kept:
                self.factors[key] = kept
        self.size = {s.id: s.size for s in self.spaces}
        self.w = [{key: s[key].to("cpu", dtype) for key in self.factors} for s in states]
        self.q: list[dict[str, dict[int, torch.Tensor]]] = []

    def reset(self, mats: list[dict[int, torch.Tensor]]) -> None:
        """Q_V from scratch for the matrices ``mats`` (dense products, once)."""
        self.q = []
        for w, m in zip(self.w, mats, strict=True):
            per_key = {}
            for key, fac in self.factors.items():
                full = (1 << len(fac)) - 1
                per_key[key] = {}
                for mask in range(full + 1):
                    t = w[key]
                    for i, (sid, e) in enumerate(fac):
                        if not mask >> i & 1:
                            t = transform_axis(t, e.axis, m[sid].to(t), e.repeat, e.offset)
                    per_key[key][mask] = t
            self.q.append(per_key)

    def universe(self, k: int) -> dict[str, torch.Tensor]:
        return {key: q[0] for key, q in self.q[k].items()}

    def vertex_terms(self, k: int, key: str, perms: dict[int, torch.Tensor], low: int
                     ) -> dict[int, torch.Tensor]:
        """S_V(Q_{V ∪ low}) for every V disjoint from the factor set ``low``."""
        fac = self.factors[key]
        free = [i for i in range(len(fac)) if not low >> i & 1]
        out = {}
        for r in range(len(free) + 1):
            for sub in itertools.combinations(free, r):
                mask = sum(1 << i for i in sub)
                t = self.q[k][key][mask | low]
                for i in sub:
                    sid, e = fac[i]
                    t = permute_axis(t, e.axis, perms[sid], e.repeat, e.offset)
                out[mask] = t
        return out

    def gradient(self, k: int, total: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        """∂f/∂P_k^s = Σ over s's factors e of rows_e(Σ_{j≠k} U_j) · rows_e(Q_{e})ᵀ (the
        tensor with every other factor applied; product rule over repeated spaces)."""
        grads = {s.id: torch.zeros(s.size, s.size, dtype=next(iter(total.values())).dtype)
                 for s in self.spaces}
        for key, fac in self.factors.items():
            rest = total[key] - self.q[k][key][0]
            for i, (sid, e) in enumerate(fac):
                n = self.size[sid]
                grads[sid] += rows(rest, e.axis, e.repeat, e.offset, n) @ \
                    rows(self.q[k][key][1 << i], e.axis, e.repeat, e.offset, n).T
        return grads


def _poly_weight(gamma: float, m: int, size: int) -> float:
    return (1.0 - gamma) ** (m - size) * gamma ** size


def _line_polynomial(ts: _Tensors, terms: Sequence[dict[str, dict[int, torch.Tensor]]]
                     ) -> Polynomial:
    """f((1 − γ)P + γS) as a polynomial in γ. Per tensor, with X_{k,V} = S_V(Q_{k,V}) and
    c_V(γ) = (1 − γ)^{m−|V|} γ^{|V|}: Σ_{k<l} ⟨U_k, U_l⟩ = ½ Σ_{k≠l} Σ_{V,W} c_V c_W
    ⟨X_{k,V}, X_{l,W}⟩ — one Gram matrix of all the X per tensor."""
    one_minus, gamma = Polynomial([1.0, -1.0]), Polynomial([0.0, 1.0])
    total = Polynomial([0.0])
    n = len(terms)
    for key, fac in ts.factors.items():
        m = len(fac)
        masks = range(1 << m)
        x = torch.stack([terms[k][key][v].reshape(-1) for k in range(n) for v in masks])
        gram = (x @ x.T).double().reshape(n, len(masks), n, len(masks))
        cross = gram.sum((0, 2)) - torch.einsum("kvkw->vw", gram)  # Σ over k ≠ l
        c = [one_minus ** (m - bin(v).count("1")) * gamma ** bin(v).count("1") for v in masks]
        for v in masks:
            for w in masks:
                total = total + 0.5 * float(cross[v, w]) * c[v] * c[w]
    return total


def _best_step(poly: Polynomial) -> float:
    """argmax of ``poly`` on [0, 1] (the endpoints and the real roots of its derivative
    inside); 0 unless it rises above poly(0)."""
    cand = [0.0, 1.0] + [float(r.real) for r in poly.deriv().roots()
                         if abs(r.imag) < 1e-12 and 0.0 < r.real < 1.0]
    best = max(cand, key=lambda t: (float(poly(t)), -t))
    return best if float(poly(best)) > float(poly(0.0)) else 0.0


def _objective(us: Sequence[dict[str, torch.Tensor]]) -> float:
    """Σ_tensors ½ (‖Σ_k U_k‖² − Σ_k ‖U_k‖²) (float64 sums)."""
    total = 0.0
    for key in us[0]:
        s = sum(u[key] for u in us)
        total += 0.5 * (float(torch.sum(s * s, dtype=torch.float64))
                        - sum(float(torch.sum(u[key] * u[key], dtype=torch.float64))
                              for u in us))
    return total


def c2m3(graph: Any, states: Sequence[dict[str, torch.Tensor]], *, init: str = "barycenter",
         start: Sequence[Alignment] | None = None, max_iter: int = 200, tol: float = 1e-6,
         patience: int = 5, seed: int = 0, include_bn_stats: bool = False,
         dtype: torch.dtype = torch.float32) -> tuple[list[Alignment], dict[str, Any]]:
    """Maximise f(P_1..P_K) over every model's maps into the universe, relaxed to the Birkhoff
    polytope, by Frank–Wolfe with every P_k free (as the authors; the objective is invariant
    to one common permutation of the universe, reported in model 1's order afterwards):

    - start: ``barycenter`` (the authors' default for merging: :func:`perturbed_barycenter`
      per model and space, seeded), ``identity``, or ``mergemany`` (``start`` = its
      permutations);
    - iterate t: G_k^s = ∂f/∂P_k^s, vertex S_k^s = argmax_{S ∈ perms} ⟨G, S⟩ (one linear
      assignment per model per space), Frank–Wolfe gap g = Σ ⟨G, S − P⟩ ≥ 0;
    - stop when g ≤ ``tol``·max(1, |f|) (a stationary point), when the exact line search
      finds no ascent, or when f has risen by at most ``tol``·max(1, |f|) in ``patience``
      consecutive iterations (the authors' rule, with 1e-6 absolute), or after ``max_iter``;
    - step: γ = the exact maximiser of the polynomial f((1 − γ)P + γS) on [0, 1] (the authors
      bound a scalar search, ``fminbound(xtol=1e-3, maxfun=20)``, on the same function);
    - then project each P_k^s to the permutation maximising ⟨P, Π⟩ (a linear assignment).

    Head spaces (groups > 1) stay identity."""
    if init not in INITS:
        raise UsageError(f"init={init!r}: expected one of {', '.join(INITS)}")
    if init == "mergemany" and start is None:
        raise UsageError("init='mergemany' needs the MergeMany alignments as start")
    ts = _Tensors(graph, states, include_bn_stats, dtype)
    n = len(states)
    gen = torch.Generator().manual_seed(seed)
    mats: list[dict[int, torch.Tensor]] = []
    for k in range(n):
        if init == "barycenter":
            mats.append({s.id: perturbed_barycenter(s.size, gen).to(dtype) for s in ts.spaces})
        else:
            al = start[k] if init == "mergemany" else Alignment.identity(graph)
            mats.append({s.id: al.matrices(s.id, s.size)[0].to(dtype) for s in ts.spaces})
    ts.reset(mats)
    f = f_start = _objective([ts.universe(k) for k in range(n)])
    gap, it, stalled, stop = float("inf"), 0, 0, "max_iter"
    while it < max_iter:
        it += 1
        total = {key: sum(ts.q[k][key][0] for k in range(n)) for key in ts.factors}
        vertices, gap = [], 0.0
        for k in range(n):
            perms = {}
            for sid, g in ts.gradient(k, total).items():
                perms[sid] = solve_assignment(g, f"c2m3, space {sid}")
                # ⟨G, S⟩ − ⟨G, P⟩ with S the permutation matrix of perms[sid]
                gap += float(g[torch.arange(len(g)), perms[sid]].sum() - (g * mats[k][sid]).sum())
            vertices.append(perms)
        if gap <= tol * max(1.0, abs(f)):
            stop = "gap"
            break
        terms = [{key: ts.vertex_terms(k, key, vertices[k], 0) for key in ts.factors}
                 for k in range(n)]
        poly = _line_polynomial(ts, terms)
        gamma = _best_step(poly)
        if gamma <= 0.0:
            stop = "no ascent"
            break
        for k in range(n):
            for sid in mats[k]:
                vert = torch.zeros_like(mats[k][sid])
                vert[torch.arange(len(vert)), vertices[k][sid]] = 1.0
                mats[k][sid] = (1.0 - gamma) * mats[k][sid] + gamma * vert
            for key, fac in ts.factors.items():
                # Q'_low = Σ_{V ∩ low = ∅} (1−γ)^{m−|low|−|V|} γ^{|V|} S_V(Q_{V ∪ low})
                new = {}
                for low in ts.q[k][key]:
                    rest = len(fac) - bin(low).count("1")
                    new[low] = sum(_poly_weight(gamma, rest, bin(v).count("1")) * t for v, t in
                                   ts.vertex_terms(k, key, vertices[k], low).items())
                ts.q[k][key] = new
        f_new = float(poly(gamma))
        stalled = stalled + 1 if f_new - f <= tol * max(1.0, abs(f)) else 0
        f = f_new
        if stalled >= patience:
            stop = "patience"
            break
    als = []
    for m in mats:
        al = Alignment.identity(graph)
        for sid, p in m.items():
            al.perms[sid] = solve_assignment(p, f"c2m3 projection, space {sid}")
        als.append(al)
    proj = [{key: t.to("cpu", torch.float64) for key, t in al.apply(graph, states[k]).items()
             if key in ts.factors} for k, al in enumerate(als)]
    return als, {"iterations": it, "stop": stop, "fw_gap": gap, "objective_start": f_start,
                 "objective_relaxed": _objective([ts.universe(k) for k in range(n)]),
                 "objective": _objective(proj)}

