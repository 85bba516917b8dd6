"""Alignments: how model B's channels map onto model A's, per free channel space.

General form, per space s: a merge matrix M_s (C × C_b; or C × K·C for a joint merge of K
models, as ZipIt! builds) and an unmerge matrix U_s (C_b × C; or K·C × C). Transforming a
model's tensors: producer-side entries (weight rows, biases, norm tensors) become M_s·W along
the space's axis; consumer-side entries (a layer's input axis) become W·U_s. A permutation is
the special case M = P, U = Pᵀ with P[i, perm[i]] = 1, stored compactly as ``perm``:
``perm[i]`` is the index of B's channel that goes to position i. Permuting never changes a
model's function.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from weightlab.errors import WeightlabError
from weightlab.graph.spaces import FeatureGraph
from weightlab.matching.assignment import block_permutation

FORMAT = 1


@dataclass
class Alignment:
    perms: dict[int, torch.Tensor] = field(default_factory=dict)
    merges: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    # a joint alignment (ZipIt!, CCA) merges both models into a new space instead of mapping
    # one onto the other; it gives each model in that space with ``express``
    joint = False

    def express(self, graph: FeatureGraph, models: list[Any],
                weights: Sequence[float] = (0.5, 0.5)) -> list[dict[str, torch.Tensor]]:
        """Joint alignments: each model's state dict expressed in the merged space for a merge
        with ``weights``; their ``weights``-weighted average is the merged model."""
        raise NotImplementedError(f"{type(self).__name__} is not a joint alignment")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def identity(cls, graph: FeatureGraph) -> Alignment:
        return cls({s.id: torch.arange(s.size) for s in graph.free_spaces()})

    @property
    def is_permutation(self) -> bool:
        return not self.merges

    def matrices(self, space_id: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, U) of a space in the general form (identity where the space is untouched)."""
        if space_id in self.merges:
            return self.merges[space_id]
        if space_id in self.perms:
            p = _perm_matrix(self.perms[space_id])
            return p, p.T
        eye = torch.eye(size)
        return eye, eye

    def split(self, graph: FeatureGraph, n_models: int) -> list[Alignment]:
        """Per-model parts of a joint (C × K·C) merge: model k's block M_k = M[:, kC:(k+1)C],
        U_k = U[kC:(k+1)C]. Σ_k M_k W_k U_k is then the jointly merged weight."""
        parts = [Alignment() for _ in range(n_models)]
        for s in graph.free_spaces():
            m, u = self.matrices(s.id, s.size)
            if m.shape[1] != n_models * s.size:
                raise WeightlabError(f"space {s.id}: merge matrix {list(m.shape)} is not a "
                                     f"joint merge of {n_models} models of {s.size} channels")
            for k, part in enumerate(parts):
                sl = slice(k * s.size, (k + 1) * s.size)
                part.merges[s.id] = (m[:, sl], u[sl])
        return parts

    # ---- algebra ------------------------------------------------------------------------
    def inverse(self) -> Alignment:
        """The map from A back to B: argsort of each perm; (U, M) for general maps."""
        out = Alignment({s: torch.argsort(p) for s, p in self.perms.items()})
        for s, (m, u) in self.merges.items():
            if m.shape[0] != m.shape[1]:
                raise WeightlabError(f"space {s}: a joint merge {list(m.shape)} has no inverse")
            out.merges[s] = (u, m)
        return out

    def compose(self, first: Alignment) -> Alignment:
        """``self ∘ first``: applying it equals applying ``first``, then ``self``
        (perm = first[self]; M = M_self·M_first, U = U_first·U_self)."""
        out = Alignment()
        for s in self.perms.keys() | first.perms.keys() | self.merges.keys() | \
                first.merges.keys():
            if s not in self.merges and s not in first.merges:
                a, b = self.perms.get(s), first.perms.get(s)
                out.perms[s] = b if a is None else a if b is None else b[a]
                continue
            size = _mid_size(self, first, s)
            m1, u1 = first.matrices(s, size)
            m2, u2 = self.matrices(s, size)
            out.merges[s] = (m2.to(m1) @ m1, u1 @ u2.to(u1))
        return out

    # ---- applying ------------------------------------------------------------------------
    def apply(self, graph: FeatureGraph, state: dict[str, torch.Tensor]
              ) -> dict[str, torch.Tensor]:
        """A new state dict with every entry of every aligned space transformed (tensors no
        space touches are shared with ``state``)."""
        out = type(state)(state) if isinstance(state, dict) else dict(state)
        if hasattr(state, "_metadata"):  # module versions (MNASNet checks its own on load)
            out._metadata = state._metadata
        consumer = graph.input_entries()
        for sid in list(self.perms) + list(self.merges):
            space = graph.spaces.get(sid)
            if space is None or space.fixed:
                what = "does not exist" if space is None else f"is fixed ({space.reason})"
                raise WeightlabError(f"alignment names channel space {sid}, which {what}")
            for e in space.entries:
                w = out[e.key]
                if sid in self.perms:
                    perm = self.perms[sid]
                    if len(perm) != space.size:
                        raise WeightlabError(f"space {sid}: permutation of {len(perm)} "
                                             f"channels for a space of {space.size}")
                    if e.per_group:  # one index per head: the heads' permutation
                        perm = block_permutation(perm, space.groups, f"space {sid}")
                    out[e.key] = permute_axis(w, e.axis, perm, e.repeat, e.offset)
                else:
                    m, u = self.merges[sid]
                    t = u.T if (e.key, e.axis) in consumer else m
                    if space.groups > 1:  # heads must stay heads: one source head per head
                        head = head_matrix(m, space.groups, f"space {sid}")
                        if e.per_group:  # a value per head (position bias): the heads' map
                            t = head
                    out[e.key] = transform_axis(w, e.axis, t, e.repeat, e.offset)
        return out

    # ---- saving -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT,
                "perms": {str(s): p.tolist() for s, p in self.perms.items()},
                "merges": {str(s): {"merge": m.tolist(), "unmerge": u.tolist()}
                           for s, (m, u) in self.merges.items()},
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "alignment") -> Alignment:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise WeightlabError(f"{where}: not an alignment (expected format {FORMAT})")
        out = cls(info=dict(d.get("info", {})))
        for s, p in d.get("perms", {}).items():
            perm = torch.tensor(p, dtype=torch.long)
            if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(len(perm))):
                raise WeightlabError(f"{where}: perms[{s}] is not a permutation of "
                                     f"0..{len(perm) - 1}")
            out.perms[int(s)] = perm
        for s, mu in d.get("merges", {}).items():
            out.merges[int(s)] = (torch.tensor(mu["merge"]), torch.tensor(mu["unmerge"]))
        return out


def head_matrix(t: torch.Tensor, groups: int, what: str = "merge") -> torch.Tensor:
    """The head-level map of a merge matrix t (C × C') of a space of ``groups`` heads:
    T[g, h] = Σ_{i ∈ head g, j ∈ head h} t[i, j] / d' (d' = C'/groups; 1 for a head moved
    whole, ½ for a head averaged with another). An error when a head of the result draws on
    more than one head of the input: mixed heads are no head of the attention."""
    d_out, d_in = t.shape[0] // groups, t.shape[1] // groups
    blocks = t.reshape(groups, d_out, groups, d_in).abs().sum((1, 3))
    if bool(((blocks > 0).sum(1) > 1).any()):
        raise WeightlabError(f"{what}: its merge mixes channels of different attention heads; "
                             f"a head space is merged head by head (weightlab.matching.heads)")
    return t.reshape(groups, d_out, groups, d_in).sum((1, 3)) / d_in


def permute_axis(w: torch.Tensor, axis: int, perm: torch.Tensor, repeat: int = 1,
                 offset: int = 0) -> torch.Tensor:
    """w with its channels along ``axis`` reordered by ``perm``; with ``repeat`` r each
    channel is a block of r consecutive indices, moved as a block. In a packed tensor the
    channels start at ``offset`` and the rest of the axis stays in place."""
    perm = perm.to(w.device)
    if repeat > 1:
        perm = (perm[:, None] * repeat + torch.arange(repeat, device=w.device)).reshape(-1)
    if offset or len(perm) != w.shape[axis]:
        full = torch.arange(w.shape[axis], device=w.device)
        full[offset:offset + len(perm)] = perm + offset
        perm = full
    return w.index_select(axis, perm)


def transform_axis(w: torch.Tensor, axis: int, t: torch.Tensor, repeat: int = 1,
                   offset: int = 0) -> torch.Tensor:
    """w' with w'[.., i, ..] = Σ_j t[i, j] w[.., j, ..] along ``axis`` (blockwise for repeat;
    in a packed tensor only the t.shape[1]·repeat indices from ``offset`` on)."""
    n = t.shape[1] * repeat
    if offset or n != w.shape[axis]:
        parts = w.split([offset, n, w.shape[axis] - offset - n], dim=axis)
        return torch.cat([parts[0], transform_axis(parts[1], axis, t, repeat), parts[2]],
                         dim=axis)
    rows = w.movedim(axis, 0)
    shape = rows.shape
    mat = rows.reshape(shape[0] // repeat, -1)
    new = (t.to(w) @ mat).reshape(t.shape[0] * repeat, *shape[1:])
    return new.movedim(0, axis).contiguous()


def identity(graph: FeatureGraph) -> Alignment:
    return Alignment.identity(graph)


def random_permutation(graph: FeatureGraph, generator: torch.Generator | None = None
                       ) -> Alignment:
    """A uniformly random permutation of every free space (for tests). Head spaces get a
    random head permutation (shared by tied spaces) and random permutations within heads."""
    out = Alignment()
    for unit in graph.units():
        groups = unit[0].groups
        if groups <= 1 and len(unit) == 1:
            out.perms[unit[0].id] = torch.randperm(unit[0].size, generator=generator)
            continue
        tau = torch.randperm(groups, generator=generator)
        for s in unit:
            d = s.size // groups
            out.perms[s.id] = torch.cat([tau[g] * d + torch.randperm(d, generator=generator)
                                         for g in range(groups)])
    return out


def permute_model(model: torch.nn.Module, graph: FeatureGraph, alignment: Alignment
                  ) -> torch.nn.Module:
    """A copy of ``model`` with ``alignment`` applied to its tensors."""
    out = copy.deepcopy(model)
    out.load_state_dict(alignment.apply(graph, model.state_dict()))
    return out


def _perm_matrix(perm: torch.Tensor) -> torch.Tensor:
    p = torch.zeros(len(perm), len(perm))
    p[torch.arange(len(perm)), perm.cpu()] = 1.0
    return p


def _mid_size(second: Alignment, first: Alignment, s: int) -> int:
    """Channels between ``first`` (its output side) and ``second`` (its input side)."""
    if s in second.merges:
        return second.merges[s][0].shape[1]
    if s in second.perms:
        return len(second.perms[s])
    return first.merges[s][0].shape[0] if s in first.merges else len(first.perms[s])
