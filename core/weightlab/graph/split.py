"""Composite channel spaces: a channel axis made of parts side by side.

``torch.cat([a, b], dim=channels)`` puts a's channels at 0 … |a| − 1 and b's after them; a
chunk ``x.chunk(k, dim=channels)`` of a space already tied elsewhere (a residual stream) cuts
it at fixed offsets. Either way the channel axis is a **composite**: an ordered list of part
spaces (offset, part). A permutation of a composite is block-diagonal, P = diag(P_1, …, P_k),
each part moving within its own index range: it commutes with cutting the axis at the parts'
boundaries (chunk i receives P_i) and with concatenating the parts back. Two chunks added
together (Res2Net-style hierarchical splits, EdgeNeXt's ``sp = sp + spx[i]``) are one space at
two offsets, like the tiles of a patch merging.

A composite root stays in the union-find (tags keep naming it) but is no space of the graph
(``dead``); its entries live on its **leaves**, the plain spaces it is made of, at the
composite entry's offset plus the leaf's (times ``repeat``). Joining a composite with a plain
space of the same size (a residual addition) cuts the plain one at the composite's boundaries;
joining two composites cuts both at the union of their boundaries, then joins leaf by leaf.
A space that is grouped into heads, rigid, tied to another or has per-head entries is never
cut: the caller fixes what it cannot represent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.fx as fx

from weightlab.errors import WeightlabError
from weightlab.graph import ops

if TYPE_CHECKING:  # pragma: no cover
    from weightlab.graph.trace import _Builder


def leaves(b: _Builder, s: int, base: int = 0) -> list[tuple[int, int, int]]:
    """(offset, size, plain root) of every leaf of ``s``, in order along the axis."""
    r = b.find(s)
    if r not in b.split:
        return [(base, b.size[r], r)]
    out: list[tuple[int, int, int]] = []
    for off, part in b.split[r]:
        out += leaves(b, part, base + off)
    return out


def compose(b: _Builder, parts: list[int]) -> int:
    """A new composite space of ``parts`` side by side (a concatenation's output)."""
    offsets, total = [], 0
    for p in parts:
        offsets.append(total)
        total += b.size[b.find(p)]
    s = b.new(total)
    b.split[s] = list(zip(offsets, parts, strict=True))
    b.dead.add(s)
    return s


def pieces(b: _Builder, n: fx.Node, s: int, sizes: list[int]) -> tuple[int, ...]:
    """The space of each piece of ``s`` cut into consecutive ``sizes`` (a chunk along the
    channel axis): one leaf, or a composite of the leaves a piece spans."""
    bounds, at = [], 0
    for z in sizes:
        bounds.append(at)
        at += z
    if at != b.size[b.find(s)]:
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) cuts {b.size[b.find(s)]} channels "
                             f"into pieces of {sizes}")
    cut(b, n, s, bounds)
    out = []
    for start, z in zip(bounds, sizes, strict=True):
        inside = [leaf for off, _, leaf in leaves(b, s) if start <= off < start + z]
        out.append(inside[0] if len(inside) == 1 else compose(b, inside))
    return tuple(out)


def cut(b: _Builder, n: fx.Node, s: int, bounds) -> None:
    """Divide the leaves of ``s`` so that every offset in ``bounds`` is a leaf boundary (a
    leaf appearing at several offsets is one space: cut once, every occurrence follows)."""
    while True:
        for off, size, leaf in leaves(b, s):
            inner = sorted({x - off for x in bounds if off < x < off + size})
            if inner:
                edges = [0, *inner, size]
                _divide(b, n, leaf, [edges[i + 1] - edges[i] for i in range(len(inner) + 1)])
                break
        else:
            return


def join(b: _Builder, n: fx.Node, a: int, c: int) -> int:
    """Union of roots ``a`` and ``c`` (equal sizes, at least one composite): both cut at every
    boundary of either, the leaves joined pairwise; ``c`` then names ``a``."""
    while True:  # (cutting a leaf both share moves the other's boundaries too)
        bounds = {off for off, _, _ in leaves(b, a)} | {off for off, _, _ in leaves(b, c)}
        cut(b, n, a, bounds)
        cut(b, n, c, bounds)
        if [off for off, _, _ in leaves(b, a)] == [off for off, _, _ in leaves(b, c)]:
            break
    for (_, _, la), (_, _, lc) in zip(leaves(b, a), leaves(b, c), strict=True):
        b.union(la, lc, n)
    ra, rc = b.find(a), b.find(c)
    if ra != rc and ra in b.split and rc in b.split:
        b.parent[rc] = ra  # (a plain one is joined already: a composite of a single leaf)
    return b.find(a)


def _divide(b: _Builder, n: fx.Node, r: int, sizes: list[int]) -> None:
    """Make the plain root ``r`` a composite of new parts of ``sizes``: each of its entries
    becomes one per part (offset + part offset · repeat); a fixed space's parts are fixed."""
    r = b.find(r)
    why = ("grouped into attention heads" if any(b.find(s) == r and g > 1
                                                for s, g in b.groups.items())
           else "rigid within heads" if any(b.find(s) == r for s in b.rigid)
           else "tied to another head space" if any(b.find(s) == r for t in b.ties for s in t)
           else "a concatenated bias" if r in b.packed
           else "per-head tensors" if any(k[3] and b.find(v[0]) == r
                                          for k, v in b.entries.items())
           else None)
    if why is not None:
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) cuts channels {why} into parts")
    parts = [b.new(z) for z in sizes]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    for key, (_, rep) in [(k, v) for k, v in b.entries.items() if b.find(v[0]) == r]:
        del b.entries[key]
        name, axis, offset, per_group = key
        for off, p in zip(offsets, parts, strict=True):
            b.entries[(name, axis, offset + off * rep, per_group)] = (p, rep)
    if r in b.fixed:
        for p in parts:
            b.fix(p, b.fixed[r])
    b.split[r] = list(zip(offsets, parts, strict=True))
    b.dead.add(r)
