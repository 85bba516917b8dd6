"""The feature-space graph's records: channel spaces, the (tensor, axis) entries they touch, and
the conv/linear layers between them.

A **space** is a set of channels that every method must permute (or merge) together: produced
by a conv or linear layer, carried through norms, activations and pooling, tied across residual
additions. Permuting every entry of a free space by the same permutation never changes the
model's function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from weightlab.errors import WeightlabError


class Entry(NamedTuple):
    """Axis ``axis`` of state-dict tensor ``key`` lives in a space. ``repeat`` > 1 where a
    flatten expanded each channel into ``repeat`` consecutive columns (C×H×W inputs of a
    linear layer): channel c owns indices c·repeat … c·repeat + repeat − 1 of that axis.

    ``offset``: the space occupies indices offset … offset + size·repeat − 1 of the axis (a
    packed tensor: attention's in_proj_weight holds Q, K and V rows at 0, E and 2E).
    ``per_group``: the axis has one index per group of the space (a head), and moves with the
    space's group permutation (relative position bias tables, one column per head)."""

    key: str
    axis: int
    repeat: int = 1
    offset: int = 0
    per_group: bool = False

    def span(self, size: int, groups: int = 1) -> int:
        """How many indices of the axis the entry covers in a space of ``size``."""
        return (groups if self.per_group else size) * self.repeat


@dataclass
class Space:
    """One channel space.

    - ``entries``: every (state-dict key, axis, repeat) that carries these channels: producer
      weights/biases (axis 0), consumer weights (axis 1), norm weight/bias/running stats.
      Scalars (Fixup's biases and scale) are not entries.
    - ``fixed``: the input space, any space reaching the logits, or one that cannot be permuted
      (``reason`` says which); matchers leave it alone.
    - ``producers``: module names of the conv/linear layers whose outputs live here.
    - ``norms``: module names of the norm layers acting here.
    - ``feature_points``: where post-activation features of this space can be read: a module
      name (a forward hook on it sees them) or, where the features are not the output of a
      module called once, the fx node name; :func:`weightlab.graph.feature_reader` reads both.
    - ``groups``: attention heads. The space is ``groups`` contiguous blocks of size/groups
      channels (one per head); a permutation must map blocks onto blocks: a head moves as a
      whole to another head's place, and channels move within their head.
      A rigid head space (RoPE, head-first q/k/v blocks: channels may not move within their
      heads) has one unit per head, ``size == groups``, its entries' ``repeat`` the head's
      channels.
    - ``tie``: another grouped space whose block (head) permutation must be the same: the
      query·key space of an attention and its value·output space (head h's scores weigh head
      h's values). Where more spaces share it, the ties form a cycle (each names the next).
    """

    id: int
    size: int
    entries: list[Entry] = field(default_factory=list)
    fixed: bool = False
    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    feature_points: list[str] = field(default_factory=list)
    reason: str = ""
    groups: int = 1
    tie: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "fixed": self.fixed, "reason": self.reason,
                "entries": [list(e) for e in self.entries], "producers": self.producers,
                "norms": self.norms, "feature_points": self.feature_points,
                "groups": self.groups, "tie": self.tie}


@dataclass
class Layer:
    """A conv or linear module: its weight's axis 0 lives in ``out_space``, axis 1 in
    ``in_space`` (with ``in_repeat`` columns per channel after a flatten). Shapes are per
    sample, from the example input (None for hand-declared specs)."""

    name: str
    kind: str  # "conv" | "linear"
    weight: str
    bias: str | None
    in_space: int
    out_space: int
    in_repeat: int = 1
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class FeatureGraph:
    """Spaces by id, their topological ``order`` (input first) and the ordered conv/linear
    ``layers``. ``fx_graph`` is the traced torch.fx graph (None for hand-declared specs); it is
    what lets :func:`weightlab.graph.feature_reader` read features at function nodes."""

    spaces: dict[int, Space]
    order: list[int]
    layers: list[Layer] = field(default_factory=list)
    fx_graph: Any = field(default=None, repr=False, compare=False)
    # the channel layout of each traced channels-first value (fx node name → (offset, size,
    # space id) per part along axis 1; one part for a plain space, several for channels made
    # of parts: a concatenation, a chunk or slice of a stream); what a merge point needs
    layouts: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict, repr=False,
                                                           compare=False)

    def __getitem__(self, space_id: int) -> Space:
        return self.spaces[space_id]

    def free_spaces(self) -> list[Space]:
        return [self.spaces[i] for i in self.order if not self.spaces[i].fixed]

    def param_axes(self, free_only: bool = True) -> dict[str, list[tuple[int, Entry]]]:
        """key → [(space id, entry), …] over the (free) spaces' entries."""
        out: dict[str, list[tuple[int, Entry]]] = {}
        for i in self.order:
            s = self.spaces[i]
            if free_only and s.fixed:
                continue
            for e in s.entries:
                out.setdefault(e.key, []).append((s.id, e))
        return out

    def units(self) -> list[list[Space]]:
        """The free spaces grouped by ``tie`` (spaces that must share a head permutation are
        matched together), in order."""
        out: list[list[Space]] = []
        seen: set[int] = set()
        for s in self.free_spaces():
            if s.id in seen:
                continue
            unit, t = [s], s.tie
            seen.add(s.id)
            while t is not None and t not in seen and not self.spaces[t].fixed:
                unit.append(self.spaces[t])
                seen.add(t)
                t = self.spaces[t].tie
            out.append(unit)
        return out

    def input_entries(self) -> set[tuple[str, int]]:
        """(key, axis) of every consumer-side entry: a layer weight's input axis. Everything
        else in a space is on the producer side (rows of weights, biases, norm tensors)."""
        return {(layer.weight, 1) for layer in self.layers
                if layer.in_space != layer.out_space}

    def check(self, state: dict[str, Any], where: str = "model") -> FeatureGraph:
        """Every entry names an existing tensor whose axis has size × repeat elements (or
        holds them from ``offset`` on, for packed tensors); groups divide their space."""
        packed = {(e.key, e.axis) for s in self.spaces.values() for e in s.entries
                  if len(e) > 3 and (e[3] or (len(e) > 4 and e[4]))}
        for s in self.spaces.values():
            s.entries = [Entry(*e) for e in s.entries]  # hand-written specs may use tuples
            if s.groups < 1 or s.size % s.groups:
                raise WeightlabError(f"{where}: feature space {s.id} of {s.size} channels "
                                     f"cannot form {s.groups} equal groups (heads)")
            for e in s.entries:
                if e.key not in state:
                    raise WeightlabError(f"{where}: feature space {s.id} names tensor "
                                         f"{e.key!r}, which the state dict does not have")
                shape = tuple(state[e.key].shape)
                n = e.span(s.size, s.groups)
                ok = e.axis < len(shape) and (
                    e.offset + n <= shape[e.axis] if (e.key, e.axis) in packed
                    else shape[e.axis] == n)
                if not ok:
                    raise WeightlabError(
                        f"{where}: feature space {s.id} expects {e.key} axis {e.axis} to have "
                        f"{n // e.repeat}×{e.repeat} elements"
                        f"{f' from index {e.offset} on' if e.offset else ''}; the tensor has "
                        f"shape {list(shape)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "spaces": [self.spaces[i].to_dict() for i in self.order],
                "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_spaces(cls, spaces: list[Space], model: Any = None) -> FeatureGraph:
        """A graph from hand-declared spaces (in topological order). Layers are derived from
        the conv/linear modules of ``model`` whose weights appear in the entries."""
        by_key: dict[tuple[str, int], tuple[int, int]] = {}
        for s in spaces:
            s.entries = [Entry(*e) for e in s.entries]
            for e in s.entries:
                if not e.offset and not e.per_group:
                    by_key[(e.key, e.axis)] = (s.id, e.repeat)
        layers = []
        if model is not None:
            from torch import nn

            for name, mod in model.named_modules():
                kind = ("conv" if isinstance(mod, nn.modules.conv._ConvNd)
                        else "linear" if isinstance(mod, nn.Linear) else None)
                w = f"{name}.weight" if name else "weight"
                if kind and (w, 0) in by_key and (w, 1) in by_key:
                    bias = f"{name}.bias" if getattr(mod, "bias", None) is not None else None
                    layers.append(Layer(name, kind, w, bias, by_key[(w, 1)][0],
                                        by_key[(w, 0)][0], by_key[(w, 1)][1]))
        return cls({s.id: s for s in spaces}, [s.id for s in spaces], layers)
