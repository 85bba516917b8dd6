"""The nmerge plugin's matchers: K models aligned jointly into one space (``match_many``).
Torch is imported inside methods so that listing components stays cheap."""

from __future__ import annotations

from dataclasses import dataclass

from weightlab.components import Matcher
from weightlab.params import param


def _finish(graph, als, info, matcher, params):
    from weightlab_nmerge.cycle import cycle_error, pairwise, relative_to_first

    out = relative_to_first(als)
    err = cycle_error(pairwise(out), len(out)) if len(out) >= 3 else 0.0
    for k, al in enumerate(out):
        al.info = {"matcher": matcher, "model": k + 1, "models": len(out),
                   "cycle_error": err, **info, "params": params}
    return out


class MergeMany(Matcher):
    """MergeMany (Ainsworth, Hayase & Srinivasa, Git Re-Basin, ICLR 2023, Algorithm 3, as the
    authors' ``match_many``): rounds in which each model in turn (a fresh seeded random order
    per round) is weight-matched, starting from its current alignment, to the mean of the
    others as currently aligned (core's weight matching), until a round brings no model
    closer to the mean of the others (or ``max_iter`` rounds; ``info["converged"]``). All K
    models end in one space, so the pairwise maps are cycle-consistent; the merge is their
    average. The alignments are expressed in model 1's channel order (model 1 unchanged).
    With two models ``match`` is the same procedure on the pair.

    Example: ``weightlab merge m1 m2 m3 m4 --matcher mergemany -o merged.safetensors``.
    """

    name = "mergemany"
    summary = "MergeMany (Git Re-Basin): weight-match each model to the mean of the others"

    @dataclass
    class Params:
        max_iter: int = param(100, "rounds over all models at most", min=1)
        seed: int = param(0, "seed of the visiting orders (models, and spaces within weight "
                             "matching)", min=0)
        include_bn_stats: bool = param(False, "count BatchNorm running statistics")

    def match_many(self, graph, models, data=None):
        from weightlab_nmerge.mergemany import merge_many

        p = self.params
        als, info = merge_many(graph, [m.state_dict() for m in models], max_iter=p.max_iter,
                               seed=p.seed, include_bn_stats=p.include_bn_stats)
        return _finish(graph, als, info, self.name, self.params_dict())

    def match(self, graph, ref, other, data=None):
        return self.match_many(graph, [ref, other], data)[1]


class C2M3(Matcher):
    """C2M3 (Crisostomi, Fumero, Baieri, Bernard & Rodolà, "C²M³: Cycle-Consistent Multi-Model
    Merging", NeurIPS 2024): a permutation P_k per model and free space into a shared universe;
    the pairwise maps P_iᵀP_j are cycle-consistent by construction. Maximises the summed
    weight-matching objective Σ_{i<j} Σ_tensors ⟨T_{P_i}(W_i), T_{P_j}(W_j)⟩ over all P_k at
    once by Frank–Wolfe on the Birkhoff polytope (per iteration one linear assignment per
    model per space and an exact line search), then projects to permutations. Started, as in
    the authors' merging configuration, from a perturbed barycenter of the polytope
    (``init=barycenter``); ``identity`` and ``mergemany`` are other starts. Attention head
    spaces (groups > 1) stay identity. Alignments are expressed in model 1's channel order.

    Example: ``weightlab merge m1 m2 m3 m4 --matcher c2m3 -o merged.safetensors``.
    """

    name = "c2m3"
    summary = "C2M3: cycle-consistent K-model matching by Frank-Wolfe on the Birkhoff polytope"

    @dataclass
    class Params:
        init: str = param("barycenter", "starting point: barycenter (perturbed, the authors' "
                          "default), identity, or mergemany", choices=("barycenter", "identity",
                                                                       "mergemany"))
        max_iter: int = param(200, "Frank-Wolfe iterations at most", min=1)
        tol: float = param(1e-6, "stop when the Frank-Wolfe gap, or the rise of the objective "
                           "over `patience` iterations, is below tol·|objective|", min=0.0)
        patience: int = param(5, "iterations without a rise above tol·|objective| before "
                              "stopping", min=1)
        seed: int = param(0, "seed of the barycenter's perturbation (and of MergeMany's "
                             "orders with init=mergemany)", min=0)
        include_bn_stats: bool = param(False, "count BatchNorm running statistics")

    def match_many(self, graph, models, data=None):
        from weightlab_nmerge.frank_wolfe import c2m3
        from weightlab_nmerge.mergemany import merge_many

        p = self.params
        states = [m.state_dict() for m in models]
        start, info = None, {}
        if p.init == "mergemany":
            start, mm = merge_many(graph, states, seed=p.seed,
                                   include_bn_stats=p.include_bn_stats)
            info["mergemany_rounds"] = mm["rounds"]
        als, fw = c2m3(graph, states, init=p.init, start=start, max_iter=p.max_iter,
                       tol=p.tol, patience=p.patience, seed=p.seed,
                       include_bn_stats=p.include_bn_stats)
        return _finish(graph, als, {**info, **fw}, self.name, self.params_dict())

    def match(self, graph, ref, other, data=None):
        return self.match_many(graph, [ref, other], data)[1]
