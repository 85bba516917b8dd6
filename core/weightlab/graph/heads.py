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
from weightlab.graph import ops, xca
from weightlab.graph.xca import Cross

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
class Fragment:
    """Values computed within each head from a head space's channels in a way that does not
    commute with permuting them (RoPE's rotated pairs ``x[..., 1::2]``): only the head axis
    ``head_axis`` is known. Its space is rigid: heads move as whole blocks, channels stay in
    place within them."""

    space: int
    heads: int
    head_axis: int


@dataclass(frozen=True)
class HeadBias:
    """A tensor gathered from a parameter table with one column (or row) per head (a relative
    position bias ``table[index]``): its axis ``head_axis`` is axis ``axis`` of ``key``."""

    key: str
    axis: int
    heads: int
    head_axis: int


@dataclass(frozen=True)
class Parts:
    """The tuple of a split (unbind/chunk): element p is ``items[p]``."""

    items: tuple


def split(b: _Builder, n: fx.Node, t: _Tag, x: tuple, out: torch.Tensor):
    """A reshape of channels-last C channels into trailing (parts, heads, dh) or (heads, dh)
    axes; the Heads tag, or None when the reshape is not such a split."""
    if b.find(t.space) in b.split:
        return None  # channels made of concatenated parts are no heads
    lead = len(x) - 1
    if len(x) > 3 and out.dim() == 4 and out.shape[0] == x[0] and out.shape[3] > 1 \
            and out.shape[1] == ops.numel(x[1:-1]) and out.shape[2] * out.shape[3] == x[-1]:
        lead = 2  # a window's token axes merged: (B, h, w, C) → (B, h·w, heads, dh)
    elif out.dim() not in (lead + 2, lead + 3) or tuple(out.shape[:lead]) != tuple(x[:lead]):
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


def split_first(b: _Builder, n: fx.Node, t: _Tag, x: tuple, out: torch.Tensor):
    """A reshape of channels-first (B, C, …) into (B, heads, dh, tokens) (timm's Attention2d):
    the Heads tag, or None."""
    if out.dim() != 4 or len(x) < 3 or out.shape[0] != x[0] or out.shape[2] == 1 \
            or out.shape[1] * out.shape[2] != x[1] or out.shape[3] != ops.numel(x[2:]):
        return None  # (a head dimension of 1: (B, C, 1, H·W) is a window partition)
    _groups(b, n, t.space, out.shape[1])
    h = Heads((t.space,), out.shape[1], out.shape[2], None, 1, 2)
    b.named_points.append((t.space, point(n, h)))
    return h


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
    # the whole value may be used again (a stream added back after its chunks): it is the
    # composite of its parts (graph.split)
    b.split[r] = list(zip(offsets, new, strict=True))
    return new


def _groups(b: _Builder, n: fx.Node, space: int, heads: int) -> None:
    r = b.find(space)
    if r in b.split:
        raise WeightlabError(f"{n.name}: channels made of concatenated parts split into heads")
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
              if isinstance(b.tags.get(a), TAGS)]
    # the features first; a per-head bias table only where nothing else is tagged
    tagged.sort(key=lambda at: isinstance(at[1], HeadBias))
    a0, t0 = tagged[0]
    if not isinstance(out, (torch.Tensor, tuple, list)) or isinstance(out, torch.Size):
        return None  # sizes, dtypes: no channels
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
        if (plain := _one_head(b, n, a0, t0, tagged, out)) is not None:
            return plain
        raise WeightlabError(f"{n.name} ({type(mod).__name__}) on attention heads")
    name = ops.op_name(n)
    if isinstance(t0, HeadBias) and not any(isinstance(t, (Heads, Scores, Fragment))
                                            for _, t in tagged):
        return _bias_view(b, n, a0, t0, out)
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
    if (fn in (torch.chunk, torch.split) or (method and fn in ("chunk", "split"))) \
            and isinstance(t0, Heads) and isinstance(out, (tuple, list)):
        return _head_parts(b, n, t0, nd, out)
    if fn is torch.einsum:
        return _einsum(b, n, out)
    if name in SDPA:
        q, k, v = (b.tags.get(a) for a in args[:3])
        _qk(b, n, q, k)
        _tie(b, q, v)
        mask = n.kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        if isinstance(mask, fx.Node) and mask.meta.get("wl_shape") is not None:
            # the scores (…, H, L, S) have q's axes but the last: a bias or mask added there
            _operand(b, n, Scores(b.find(q.spaces[0]), q.heads, q.head_axis), mask,
                     len(a0.meta["wl_shape"]))
        return v
    if fn in (F.softmax, torch.softmax) or (method and fn == "softmax") \
            or fn in ops.CARRY_FNS or (method and fn in ops.CARRY_METHODS):
        return t0
    if fn is F.normalize:
        return _normalize(b, n, t0, nd)
    if fn is operator.getitem and isinstance(t0, (Heads, Fragment)):
        return _index(b, n, a0, t0, out)
    if (fn in (torch.cat, torch.concat, torch.stack) and isinstance(t0, (Heads, Fragment))):
        return _join(b, n, t0, out)
    if fn in ops.ELEMENTWISE or (method and fn in ops.ELEMENTWISE_METHODS):
        if tuple(out.shape) == tuple(a0.meta["wl_shape"]) and isinstance(
                t0, (Heads, Scores, Fragment, Cross)):
            result = t0
            for a in ops.flat_nodes(n.args):
                if a is not a0 and (t := _operand(b, n, t0, a, nd)) is not None:
                    result = t  # Heads + Fragment (RoPE's x·cos + rot(x)·sin): the heads
            return result
        if isinstance(t0, Scores):
            b.fix(t0.space, f"{n.name}: a computed bias is added to the scores")
            return t0
    if fn in ops.RESHAPE or (method and fn in ops.RESHAPE_METHODS):
        try:
            return _merge(b, n, a0, t0, out)
        except WeightlabError:
            if (plain := _one_head(b, n, a0, t0, tagged, out)) is not None:
                return plain
            raise
    if (plain := _one_head(b, n, a0, t0, tagged, out)) is not None:
        return plain
    raise WeightlabError(f"{n.name} ({name}) on attention heads is not supported")


def _one_head(b: _Builder, n: fx.Node, a: fx.Node, t, tagged, out):
    """A "split" into one head of all C channels on the last axis is only a unit axis (a
    window grid of one window, (B, P, 1, C)): used as anything but attention, the value is
    ordinary channels-last features again. None where that is not the case."""
    from weightlab.graph.trace import _Tag

    nd = len(a.meta["wl_shape"])
    if not (isinstance(t, Heads) and t.heads == 1 and len(t.spaces) == 1 and len(tagged) == 1
            and t.part_axis is None and t.dh_axis == nd - 1):
        return None
    b.tags[a] = _Tag(t.spaces[0], 1, nd > 2)
    return b.rule(n, out)


def gathered(b: _Builder, n: fx.Node, out: torch.Tensor) -> HeadBias | None:
    """``table[index]`` of a (positions, heads) parameter, or ``table[:, index]`` of a
    (heads, positions) one: a HeadBias whose head axis is the table's other axis."""
    src, idx = n.args[0], n.args[1]
    key = b.tags[src]
    p = b.param_shapes.get(key, src.meta.get("wl_shape"))
    if p is None or len(p) != 2 or key not in b.state_keys:
        return None
    whole = slice(None, None, None)
    if isinstance(idx, fx.Node) and idx.meta.get("wl_shape") is not None \
            and out.shape[-1] == p[1]:
        return HeadBias(key, 1, p[1], out.dim() - 1)
    if isinstance(idx, tuple) and len(idx) == 2 and idx[0] == whole \
            and isinstance(idx[1], fx.Node) and idx[1].meta.get("wl_shape") is not None \
            and out.shape[0] == p[0]:
        return HeadBias(key, 0, p[0], 0)
    return None


def _space(t) -> int:
    return t.spaces[0] if isinstance(t, Heads) else t.space


def rigid(b: _Builder, n: fx.Node, t) -> None:
    """Channels of a head space that may not move within their heads (RoPE rotates fixed
    pairs of them by position-dependent angles): only whole heads move. ``finish`` turns the
    space into one of ``heads`` units, each a block of dh consecutive channels."""
    if isinstance(t, Heads) and len(t.spaces) != 1:
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) acts within heads of several parts")
    s = b.find(_space(t))
    dh = b.size[s] // t.heads
    if b.rigid.setdefault(s, dh) != dh:
        raise WeightlabError(f"{n.name}: heads of {dh} and {b.rigid[s]} channels")


def _operand(b: _Builder, n: fx.Node, t, a: fx.Node, nd: int):
    """Another operand ``a`` of an elementwise operation on ``t`` (Heads, Scores or a
    Fragment with ``nd`` axes): ties, entries or fixes what it needs; returns the Heads
    tag where ``a`` carries one and ``t`` does not."""
    ta = b.tags.get(a)
    shape = a.meta.get("wl_shape")
    if shape is None or ops.numel(shape) == 1:
        return None  # a scalar
    lead = nd - len(shape)  # broadcasting aligns from the right
    h = t.head_axis - lead  # a's axis against the head axis (< 0: it has none)
    if isinstance(ta, (Heads, Scores, Fragment)):
        if ta.head_axis != h or ta.heads != t.heads or (
                isinstance(ta, Heads) and len(ta.spaces) != 1) or (
                isinstance(t, Heads) and len(t.spaces) != 1):
            raise WeightlabError(f"{n.name} ({ops.op_name(n)}) combines attention heads along "
                                 f"different axes")
        b.union(_space(t), _space(ta), n)  # the same channels, head for head
        return ta if isinstance(ta, Heads) and not isinstance(t, Heads) else None
    if isinstance(ta, HeadBias) and ta.head_axis == h and ta.heads == t.heads:
        # a per-head bias table: its column h moves with head h
        b.entry(ta.key, ta.axis, _space(t), n, per_group=True)
        return None
    if isinstance(ta, str) and ta in b.state_keys and h >= 0 and shape[h] == t.heads \
            and tuple(b.param_shapes.get(ta, ())) == tuple(shape) \
            and all(z == 1 for i, z in enumerate(shape) if i != h) \
            and not (isinstance(t, Heads) and len(t.spaces) != 1):
        # a parameter with one value per head and nothing else (XCA's temperature τ of shape
        # (H, 1, 1)): its value h moves with head h
        b.entry(ta, h, _space(t), n, per_group=True)
        return None
    per_head = h >= 0 and shape[h] != 1
    if (isinstance(ta, str) and ta in b.state_keys) or isinstance(ta, HeadBias) or per_head:
        # a parameter, or a tensor that differs from head to head, which the graph cannot
        # permute with the heads (a constant outside the state dict is like a computed one)
        b.fix(_space(t), f"{n.name}: a computed per-head tensor is combined with attention "
                         f"heads")
        return None
    if isinstance(t, Heads):
        d = t.dh_axis - lead
        if d >= 0 and shape[d] != 1:
            # the same for every head but different per channel within a head (RoPE's
            # cos/sin): channels stay in place within heads
            rigid(b, n, t)
    return None  # the same for every head (a shifted window's mask): heads may move


def _bias_view(b: _Builder, n: fx.Node, a: fx.Node, t: HeadBias, out):
    """Views of a per-head bias table (reshape, permute, unsqueeze, contiguous): the head
    axis followed, or None (a computed tensor) where it is lost."""
    fn, method = n.target, n.op == "call_method"
    x = a.meta["wl_shape"]
    nd = len(x)
    h = t.head_axis
    if fn is torch.permute or (method and fn == "permute"):
        dims = n.args[1:] if len(n.args) > 1 else n.kwargs.get("dims")
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        return replace(t, head_axis=[int(d) % nd for d in dims].index(h))
    if fn is torch.unsqueeze or (method and fn == "unsqueeze"):
        d = int(n.args[1] if len(n.args) > 1 else n.kwargs["dim"]) % out.dim()
        return replace(t, head_axis=h + (d <= h))
    if fn in ops.CARRY_FNS or (method and fn in (*ops.CARRY_METHODS, "type_as")):
        return t
    if fn in ops.RESHAPE or (method and fn in (*ops.RESHAPE_METHODS, "expand")):
        new = _follow(x, tuple(out.shape), h)
        return None if new is None else replace(t, head_axis=new)
    return None


def _follow(x: tuple, y: tuple, h: int) -> int | None:
    """Where axis h of shape x is after a reshape to y that keeps it whole: the axes up to
    it unchanged, or those from it on."""
    if tuple(y[:h + 1]) == tuple(x[:h + 1]):
        return h
    k = len(x) - h
    if len(y) >= k and tuple(y[len(y) - k:]) == tuple(x[h:]):
        return len(y) - k
    return None


def _head_parts(b: _Builder, n: fx.Node, t: Heads, nd: int, out):
    """q, k, v split from each head's channels (heads first: each head's block holds its
    query, key and value channels one after another; LeViT, timm's MaxViT and CoAtNet): no
    entry can name one part's channels across all heads (they are strided), so the space is
    rigid, one unit per head (its block of q, k and v channels), and the parts share it."""
    dim = int(n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 0)) % nd
    if dim != t.dh_axis or len(t.spaces) != 1:
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) splits attention heads along axis "
                             f"{dim}, not their channels")
    rigid(b, n, t)
    return Parts(tuple(replace(t, dh=o.shape[dim]) for o in out))


def _index(b: _Builder, n: fx.Node, a: fx.Node, t, out):
    """Slicing a head value: along its tokens (EVA's prefix tokens q[:, :, :1]) it keeps its
    tag; slicing the head dimension (RoPE's x[..., ::2]) leaves a Fragment of a rigid head
    space. The batch and head axes must stay whole."""
    x = a.meta["wl_shape"]
    idx = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
    if Ellipsis in idx:
        i = idx.index(Ellipsis)
        idx = idx[:i] + (slice(None),) * (len(x) - len(idx) + 1) + idx[i + 1:]
    whole = slice(None, None, None)
    if len(idx) > len(x) or not all(isinstance(s, slice) for s in idx) or out.dim() != len(x):
        raise WeightlabError(f"{n.name} (indexing) selects {n.args[1]} of attention heads "
                             f"{list(x)}")
    cut = {i for i, s in enumerate(idx) if s != whole}
    if 0 in cut or t.head_axis in cut or (isinstance(t, Heads) and t.part_axis in cut):
        raise WeightlabError(f"{n.name} (indexing) cuts the heads of a {list(x)} tensor")
    if isinstance(t, Heads) and t.dh_axis in cut:
        rigid(b, n, t)
        return Fragment(b.find(t.spaces[0]), t.heads, t.head_axis)
    return t


def _join(b: _Builder, n: fx.Node, t, out):
    """cat / stack of head values along another axis than heads and head dims (EVA's prefix
    tokens back before the rotated ones; RoPE's stack of rotated halves): one space."""
    items = n.args[0] if n.args else n.kwargs["tensors"]
    dim = int(n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)) % out.dim()
    stack = n.target is torch.stack
    tags = [b.tags.get(a) if isinstance(a, fx.Node) else None for a in items]
    if not all(isinstance(u, (Heads, Fragment)) and type(u) is type(tags[0]) for u in tags) \
            or any(u.head_axis != t.head_axis for u in tags) or (
            isinstance(t, Heads) and (len(t.spaces) != 1 or any(
                u.dh_axis != t.dh_axis for u in tags))):
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) joins attention heads with other "
                             f"tensors")
    keep = {t.head_axis} | ({t.dh_axis} if isinstance(t, Heads) else set())
    if (not stack and dim in keep) or (stack and dim <= max(keep) and isinstance(t, Heads)):
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) joins attention heads along their "
                             f"head axes")
    for u in tags[1:]:
        b.union(_space(t), _space(u), n)
    if stack and dim <= t.head_axis:
        return replace(t, head_axis=t.head_axis + 1)
    return t


def _einsum(b: _Builder, n: fx.Node, out):
    """torch.einsum in attention's two matmul forms, on named axes (MaxViT:
    "B G H I D, B G H J D -> B G H I J" and "B G H I J, B G H J D -> B G H I D"):
    q·k contracts the head dimension of q and k, sharing the heads axis; scores·v contracts
    the keys, keeping the heads and v's head dimension."""
    eq = n.args[0] if isinstance(n.args[0], str) else None
    operands = list(n.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if eq is None or "..." in eq or "->" not in eq or len(operands) != 2:
        raise WeightlabError(f"{n.name} (einsum {eq!r}) on attention heads: only two-operand "
                             f"equations with named axes are supported")
    lhs, res = eq.replace(" ", "").split("->")
    ins = lhs.split(",")
    ta, tc = (b.tags.get(a) if isinstance(a, fx.Node) else None for a in operands)
    la, lc = ins
    if len(set(la)) != len(la) or len(set(lc)) != len(lc) or len(set(res)) != len(res):
        raise WeightlabError(f"{n.name} (einsum {eq!r}): repeated axes")

    def head_letter(t, letters):
        return letters[t.head_axis]

    if isinstance(ta, Heads) and isinstance(tc, Heads) and len(ta.spaces) == 1 \
            and len(tc.spaces) == 1:
        h, d = head_letter(ta, la), la[ta.dh_axis]
        if lc[tc.head_axis] != h or lc[tc.dh_axis] != d or d in res or h not in res:
            raise WeightlabError(f"{n.name} (einsum {eq!r}) does not contract the head "
                                 f"dimension of query and key")
        _qk(b, n, ta, tc)
        return Scores(b.find(ta.spaces[0]), ta.heads, res.index(h))
    if isinstance(ta, Scores) and isinstance(tc, Heads) and len(tc.spaces) == 1:
        h, d = la[ta.head_axis], lc[tc.dh_axis]
        if lc[tc.head_axis] != h or h not in res or d not in res or d in la:
            raise WeightlabError(f"{n.name} (einsum {eq!r}): scores and values do not share "
                                 f"their heads")
        _tie(b, ta, tc)
        return Heads(tc.spaces, tc.heads, tc.dh, None, res.index(h), res.index(d))
    raise WeightlabError(f"{n.name} (einsum {eq!r}) of attention heads with another tensor")


SDPA = {"torch._C._nn.scaled_dot_product_attention",
        "torch.nn.functional.scaled_dot_product_attention"}


def _normalize(b: _Builder, n: fx.Node, t, nd: int):
    """F.normalize(x, p, dim): x / ‖x‖_p along ``dim``. The p-norm of a set of numbers does
    not depend on their order: along the tokens, or a head's channels, it commutes with every
    permutation the heads allow. Along the heads axis it mixes heads whose channels may move
    differently: only whole heads move then (rigid). Along q/k/v parts it is refused."""
    dim = int(n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 1)) % nd
    if isinstance(t, Heads) and t.part_axis is not None and dim == t.part_axis:
        raise WeightlabError(f"{n.name} (normalize) across the query, key and value parts")
    if dim == t.head_axis:
        if not isinstance(t, Heads):
            raise WeightlabError(f"{n.name} (normalize) across attention heads")
        rigid(b, n, t)
    return t


def _moved(t, dims):
    if isinstance(t, Cross):
        return t.moved(dims)
    if isinstance(t, (Scores, Fragment, HeadBias)):
        return replace(t, head_axis=dims.index(t.head_axis))
    return t.moved(dims)


def _qk(b: _Builder, n: fx.Node, q, k) -> None:
    if not (isinstance(q, Heads) and isinstance(k, Heads)) or len(q.spaces) != 1 or \
            len(k.spaces) != 1:
        raise WeightlabError(f"{n.name}: attention scores of values that are not query/key heads")
    rq, rk = b.find(q.spaces[0]), b.find(k.spaces[0])
    if rq != rk and b.size[rq] != b.size[rk] and (rq in b.rigid or rk in b.rigid):
        # a query of its own against keys split from a rigid head-first block (LeViT's
        # subsampling attention): whole heads move together, channels stay within heads
        rigid(b, n, q)
        rigid(b, n, k)
        b.ties.append((rq, rk))
        return
    b.union(q.spaces[0], k.spaces[0], n)


def _tie(b: _Builder, qk, v) -> None:
    s = qk.space if isinstance(qk, Scores) else qk.spaces[0]
    if b.find(s) != b.find(v.spaces[0]):  # (head-first parts: one rigid space)
        b.ties.append((s, v.spaces[0]))


def _matmul(b: _Builder, n: fx.Node, tagged, out):
    ta = tagged[0][1]
    tc = tagged[1][1] if len(tagged) > 1 else None
    if isinstance(ta, Heads) and isinstance(tc, Heads) and xca.is_scores(ta, tc, out.dim()):
        return xca.scores(b, n, ta, tc)  # q (…, d, N) @ kᵀ (…, N, d): across channels
    if isinstance(ta, Cross) and isinstance(tc, Heads):
        return xca.apply(b, n, ta, tc, out.dim())
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
    last = isinstance(t, Heads) and len(t.spaces) == 1 and t.head_axis == len(x) - 2 \
        and t.dh_axis == len(x) - 1 and out.shape[-1] == t.heads * t.dh \
        and ops.numel(out.shape[:-1]) == ops.numel(x[:-2]) and out.shape[0] == x[0]
    first = isinstance(t, Heads) and len(t.spaces) == 1 and t.head_axis == 1 \
        and t.dh_axis == 2 and len(x) == 4 and out.dim() > 2 \
        and out.shape[1] == t.heads * t.dh and ops.numel(out.shape[2:]) == x[3]
    if last or first:
        s = t.spaces[0]
        if b.size[b.find(s)] != t.heads * t.dh:
            # the values of a rigid head-first block: a space of their own, rigid too, whose
            # heads move with the block's
            o = b.new(t.heads * t.dh)
            b.groups[o] = t.heads
            b.rigid[o] = t.dh
            b.ties.append((s, o))
            s = o
        return _Tag(s, 1, last and out.dim() > 2)
    if isinstance(t, Heads) and tuple(out.shape) == tuple(x):
        return t
    if isinstance(t, (Scores, Fragment)) and (h := _follow(x, tuple(out.shape), t.head_axis)) \
            is not None:
        # the heads axis kept whole: windows split from the batch (Swin's scores viewed as
        # (B, windows, H, N, N) to add the shifted window's mask), RoPE's pairs merged back
        return replace(t, head_axis=h)
    raise WeightlabError(f"{n.name} ({ops.op_name(n)}) reshapes attention heads {list(x)} to "
                         f"{list(out.shape)}")


TAGS = (Heads, Scores, Fragment, HeadBias, Parts, Cross)


def point(node: fx.Node, t: Heads) -> str:
    """The feature point of a query, key or value: channels = (head, head dim) flattened."""
    return f"{node.name}@heads:{t.head_axis},{t.dh_axis}"
