"""Attention written out by hand (timm's ``Attention``, MaxViT): heads split by reshape.

    qkv = linear(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4); q, k, v = qkv.unbind(0)
    x = softmax(q @ kᵀ · s) @ v    (or F.scaled_dot_product_attention(q, k, v))
    x = x.transpose(1, 2).reshape(B, N, H·d)

The linear's 3E output channels split into three parts of E = H·d: the part spaces replace
the linear's space (its rows at offsets 0, E, 2E). A value whose channels are split into
(part,) head and head-dim axes carries a :class:`Heads` tag that knows where those axes are;
``q @ kᵀ`` makes q's and k's part spaces one query·key space, ``scores @ v`` ties it to v's
value·output space (one head permutation), and merging the head and head-dim axes back gives
an ordinary channels-last value of the value·output space, which the output projection reads.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.fx as fx
import torch.nn.functional as F

from weightlab.errors import WeightlabError
from weightlab.graph import ops

if TYPE_CHECKING:  # pragma: no cover
    from weightlab.graph.trace import _Builder, _Tag


@dataclass(frozen=True)
class Heads:
    """A value whose channels are split: ``spaces`` (one per part; one once a part is
    selected), ``heads`` × ``dh`` channels each, at axes ``part_axis`` (None once selected),
    ``head_axis`` and ``dh_axis``."""

    spaces: tuple[int, ...]
    heads: int
    dh: int
    part_axis: int | None
    head_axis: int
    dh_axis: int

    def moved(self, dims: list[int]) -> Heads:
        """After out = x.permute(dims): an axis a of x is at dims.index(a)."""
        pa = None if self.part_axis is None else dims.index(self.part_axis)
        return replace(self, part_axis=pa, head_axis=dims.index(self.head_axis),
                       dh_axis=dims.index(self.dh_axis))


@dataclass(frozen=True)
class Scores:
    """Attention scores (…, H, L, S) of a query·key space, head axis ``head_axis``."""

    space: int
    heads: int
    head_axis: int


@dataclass(frozen=True)
class Parts:
    """The tuple of a split (unbind/chunk): element p is ``items[p]``."""

    items: tuple


def split(b: _Builder, n: fx.Node, t: _Tag, x: tuple, out: torch.Tensor):
    """A reshape of channels-last C channels into trailing (parts, heads, dh) or (heads, dh)
    axes; the Heads tag, or None when the reshape is not such a split."""
    lead = len(x) - 1
    if out.dim() not in (lead + 2, lead + 3) or tuple(out.shape[:lead]) != tuple(x[:lead]):
        return None
    trail = tuple(out.shape[lead:])
    if ops.numel(trail) != x[-1] or len(trail) < 2:
        return None
    parts, heads, dh = (1, *trail) if len(trail) == 2 else trail
    spaces = part_spaces(b, n, t.space, parts) if parts > 1 else (t.space,)
    for s in spaces:
        _groups(b, n, s, heads)
    nd = out.dim()
    if parts == 1:
        t = Heads(spaces, heads, dh, None, nd - 2, nd - 1)
        b.named_points.append((spaces[0], point(n, t)))
        return t
    return Heads(spaces, heads, dh, nd - 3 if parts > 1 else None, nd - 2, nd - 1)


def part_spaces(b: _Builder, n: fx.Node, space: int, parts: int | list[int]
                ) -> tuple[int, ...]:
    """Split a layer's freshly produced space into parts (``parts`` equal ones, or of the
    given sizes): its weight rows, bias and norm tensors at the parts' offsets. Refused once
    the space is tied to anything else."""
    r = b.find(space)
    size = b.size[r]
    sizes = [size // parts] * parts if isinstance(parts, int) else list(parts)
    mine = [(k, v) for k, v in b.entries.items() if b.find(v[0]) == r]
    if sum(sizes) != size or any(k[1] != 0 or k[2] or k[3] or v[1] != 1 for k, v in mine):
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) splits channels into parts "
                             f"{sizes} after they were combined with other tensors")
    new = tuple(b.new(z) for z in sizes)
    offsets = [sum(sizes[:p]) for p in range(len(sizes))]
    for k, _ in mine:
        del b.entries[k]
        for off, s in zip(offsets, new):
            b.entry(k[0], 0, s, n, offset=off)
    # a bias concatenated in forward (BEiT's cat(q_bias, k_bias, v_bias)): one piece per part
    pieces = b.packed.pop(r, [])
    if pieces and [length for _, length in pieces] != sizes:
        raise WeightlabError(f"{n.name}: a concatenated bias of pieces "
                             f"{[length for _, length in pieces]} does not split into parts "
                             f"{sizes}")
    for (key, _), s in zip(pieces, new):
        if key in b.state_keys:  # not a non-persistent buffer (BEiT's zero k_bias)
            b.entry(key, 0, s, n)
    if r in b.fixed:
        for s in new:
            b.fix(s, b.fixed[r])
    prods = list(b.producers)
    b.producers[:] = [(s, name) for s, name in prods if b.find(s) != r] + [
        (p, name) for s, name in prods if b.find(s) == r for p in new]
    norms = list(b.norms)
    b.norms[:] = [(s, name) for s, name in norms if b.find(s) != r] + [
        (p, name) for s, name in norms if b.find(s) == r for p in new]
    b.layers[:] = [(layer, s_in, new[0] if b.find(s_out) == r else s_out)
                   for layer, s_in, s_out in b.layers]
    b.dead.add(r)
    return new


def _groups(b: _Builder, n: fx.Node, space: int, heads: int) -> None:
    r = b.find(space)
    if b.size[r] % heads:
        raise WeightlabError(f"{n.name}: {b.size[r]} channels do not split into {heads} heads")
    old = b.groups.get(r, 1)
    if old not in (1, heads):
        raise WeightlabError(f"{n.name}: channels split into {heads} heads here and {old} "
                             f"elsewhere")
    b.groups[r] = heads


def rule(b: _Builder, n: fx.Node, out):
    """Operations on Heads / Scores / Parts values."""
    fn, method = n.target, n.op == "call_method"
    args = list(n.args)
    tagged = [(a, b.tags[a]) for a in ops.flat_nodes((n.args, n.kwargs))
              if isinstance(b.tags.get(a), (Heads, Scores, Parts))]
    a0, t0 = tagged[0]
    if fn is operator.getitem and isinstance(t0, Parts):
        item = t0.items[args[1]]
        if isinstance(item, Heads):  # a query, key or value: where its features are read
            b.named_points.append((item.spaces[0], point(n, item)))
        return item
    if isinstance(t0, Parts):
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) on a tuple of attention parts")
    nd = len(a0.meta["wl_shape"])
    if n.op == "call_module":
        mod = b.modules[n.target]
        if isinstance(mod, (*ops.CARRY_MODULES, torch.nn.Softmax)):
            return t0
        raise WeightlabError(f"{n.name} ({type(mod).__name__}) on attention heads")
    name = ops.op_name(n)
    if fn in (torch.permute,) or (method and fn == "permute"):
        dims = args[1:] if len(args) > 1 else n.kwargs.get("dims")
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        return _moved(t0, [int(d) % nd for d in dims])
    if fn in (torch.transpose, torch.swapaxes) or (method and fn in ("transpose", "swapaxes")):
        i, j = (int(d) % nd for d in args[1:3])
        dims = list(range(nd))
        dims[i], dims[j] = dims[j], dims[i]
        return _moved(t0, dims)
    if (fn is torch.unbind or (method and fn == "unbind")) and isinstance(t0, Heads):
        dim = int(args[1] if len(args) > 1 else n.kwargs.get("dim", 0)) % nd
        if dim != t0.part_axis:
            raise WeightlabError(f"{n.name} (unbind) along axis {dim}, not the parts' axis")
        keep = [d for d in range(nd) if d != dim]
        return Parts(tuple(Heads((s,), t0.heads, t0.dh, None, keep.index(t0.head_axis),
                                 keep.index(t0.dh_axis)) for s in t0.spaces))
    if fn in (torch.matmul, operator.matmul) or (method and fn == "matmul"):
        return _matmul(b, n, tagged, out)
    if name in SDPA:
        q, k, v = (b.tags.get(a) for a in args[:3])
        _qk(b, n, q, k)
        _tie(b, q, v)
        mask = n.kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        if isinstance(mask, fx.Node) and mask.meta.get("wl_shape") is not None:
            # a tensor: a per-head bias or a mask the graph cannot follow
            b.fix(q.spaces[0], f"{n.name}: a computed mask or bias is added to the scores")
        return v
    if fn in (F.softmax, torch.softmax) or (method and fn == "softmax") \
            or fn in ops.CARRY_FNS or (method and fn in ops.CARRY_METHODS):
        return t0
    if fn in ops.ELEMENTWISE or (method and fn in ops.ELEMENTWISE_METHODS):
        others = [a for a in ops.flat_nodes(n.args) if a is not a0]
        if all(isinstance(b.tags.get(a), (Heads, Scores)) or a.meta.get("wl_shape") is None
               or ops.numel(a.meta["wl_shape"]) == 1 for a in others) and \
                tuple(out.shape) == tuple(a0.meta["wl_shape"]):
            if isinstance(t0, Scores):  # a mask or a per-head bias the graph cannot follow
                if any(a.meta.get("wl_shape") and ops.numel(a.meta["wl_shape"]) > 1
                       and not isinstance(b.tags.get(a), Scores) for a in others):
                    b.fix(t0.space, f"{n.name}: a computed bias is added to the scores")
            return t0
        if isinstance(t0, Scores):
            b.fix(t0.space, f"{n.name}: a computed bias is added to the scores")
            return t0
    if fn in ops.RESHAPE or (method and fn in ops.RESHAPE_METHODS):
        return _merge(b, n, a0, t0, out)
    raise WeightlabError(f"{n.name} ({name}) on attention heads is not supported")


SDPA = {"torch._C._nn.scaled_dot_product_attention",
        "torch.nn.functional.scaled_dot_product_attention"}


def _moved(t, dims):
    if isinstance(t, Scores):
        return replace(t, head_axis=dims.index(t.head_axis))
    return t.moved(dims)


def _qk(b: _Builder, n: fx.Node, q, k) -> None:
    if not (isinstance(q, Heads) and isinstance(k, Heads)) or len(q.spaces) != 1 or \
            len(k.spaces) != 1:
        raise WeightlabError(f"{n.name}: attention scores of values that are not query/key heads")
    b.union(q.spaces[0], k.spaces[0], n)


def _tie(b: _Builder, qk, v) -> None:
    s = qk.space if isinstance(qk, Scores) else qk.spaces[0]
    b.ties.append((s, v.spaces[0]))


def _matmul(b: _Builder, n: fx.Node, tagged, out):
    ta = tagged[0][1]
    tc = tagged[1][1] if len(tagged) > 1 else None
    if isinstance(ta, Heads) and isinstance(tc, Heads):
        nd = out.dim()
        # q (…, L, d) @ kᵀ (…, d, S): q's head dim last, k's second to last
        if ta.dh_axis != nd - 1 or tc.dh_axis != nd - 2:
            raise WeightlabError(f"{n.name} (matmul) does not contract the head dimension")
        _qk(b, n, ta, tc)
        return Scores(b.find(ta.spaces[0]), ta.heads, ta.head_axis)
    if isinstance(ta, Scores) and isinstance(tc, Heads):
        if tc.dh_axis != out.dim() - 1:
            raise WeightlabError(f"{n.name} (matmul): values with the head dimension elsewhere")
        _tie(b, ta, tc)
        return tc
    raise WeightlabError(f"{n.name} (matmul) of attention heads with another tensor")


def _merge(b: _Builder, n: fx.Node, a: fx.Node, t, out):
    """(…, H, d) with head and head-dim last, in that order → (…, H·d) channels-last."""
    from weightlab.graph.trace import _Tag

    x = a.meta["wl_shape"]
    if isinstance(t, Heads) and len(t.spaces) == 1 and t.head_axis == len(x) - 2 \
            and t.dh_axis == len(x) - 1 and out.shape[-1] == t.heads * t.dh \
            and tuple(out.shape[:-1]) == tuple(x[:-2]):
        return _Tag(t.spaces[0], 1, out.dim() > 2)
    if isinstance(t, Heads) and tuple(out.shape) == tuple(x):
        return t
    raise WeightlabError(f"{n.name} ({ops.op_name(n)}) reshapes attention heads {list(x)} to "
                         f"{list(out.shape)}")


def point(node: fx.Node, t: Heads) -> str:
    """The feature point of a query, key or value: channels = (head, head dim) flattened."""
    return f"{node.name}@heads:{t.head_axis},{t.dh_axis}"
