"""Attention in the traced graph: multi-head attention's channel spaces.

For input tokens x (channels on the last axis) multi-head attention computes, per head h,

    softmax(Q_h K_hᵀ / √d + B_h) V_h,   Q = x W_qᵀ + b_q,  K = x W_kᵀ + b_k,  V = x W_vᵀ + b_v

and projects the concatenated heads with W_o. Two spaces of E = H·d channels open here:

- the **query·key** space: rows of W_q, b_q, W_k, b_k (and bias_k). Permuting Q's and K's
  channels within a head by the same permutation leaves every Q_h K_hᵀ unchanged;
- the **value·output** space: rows of W_v, b_v (and bias_v) and the columns of W_o.

Both are ``groups = H`` spaces (a permutation keeps each head's d channels together) and are
``tie``d: moving head h to head h' must happen in both, since head h's scores weigh head h's
values. Per-head tensors (a relative position bias table, one column per head) follow the
head permutation (``Entry.per_group``). W_o's rows and b_o open the output space.

Covered: ``nn.MultiheadAttention`` (packed ``in_proj_weight`` — Q, K, V rows at offsets 0, E,
2E — or separate q/k/v projection weights; ``bias_k``/``bias_v``), and torchvision's Swin
``shifted_window_attention`` (fused ``qkv`` weight, relative position bias table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.fx as fx
from torch import nn

from weightlab.errors import WeightlabError
from weightlab.graph.spaces import Layer

if TYPE_CHECKING:  # pragma: no cover
    from weightlab.graph.trace import _Builder


def _arg(n: fx.Node, i: int, name: str):
    return n.args[i] if len(n.args) > i else n.kwargs.get(name)


def _token_tag(b: _Builder, n: fx.Node, node, what: str):
    t = b.tag_of(node)
    shape = node.meta.get("wl_shape") if isinstance(node, fx.Node) else None
    if t is None or t.repeat != 1 or shape is None or not (t.last or len(shape) == 2):
        raise WeightlabError(f"{n.name} (attention): its {what} is not a sequence of tokens "
                             f"with channels on the last axis")
    return t


def _heads(b: _Builder, n: fx.Node, e: int, heads: int) -> tuple[int, int]:
    """The query·key and value·output spaces of one attention, tied head for head."""
    if heads < 1 or e % heads:
        raise WeightlabError(f"{n.name} (attention): {e} channels do not split into {heads} heads")
    qk, vo = b.new(e), b.new(e)
    b.groups[qk] = b.groups[vo] = heads
    b.ties.append((qk, vo))
    return qk, vo


def _packed(b: _Builder, n: fx.Node, weight: str, bias: str | None, inputs, qk: int, vo: int,
            e: int) -> None:
    """A fused projection with Q, K, V rows at 0, E, 2E (axis 1 reads the tokens)."""
    for t in inputs:
        b.entry(weight, 1, t.space, n)
    for key in (weight, bias):
        if key is not None:
            b.entry(key, 0, qk, n, offset=0)
            b.entry(key, 0, qk, n, offset=e)
            b.entry(key, 0, vo, n, offset=2 * e)


def multihead(b: _Builder, n: fx.Node, mod: nn.MultiheadAttention, out):
    """``nn.MultiheadAttention(query, key, value, …)``: returns the tag of its output."""
    name = n.target
    nodes = [_arg(n, i, w) for i, w in enumerate(("query", "key", "value"))]
    tq, tk, tv = (_token_tag(b, n, a, w) for a, w in zip(nodes, ("query", "key", "value"),
                                                        strict=True))
    e, heads = mod.embed_dim, mod.num_heads
    qk, vo = _heads(b, n, e, heads)
    bias = f"{name}.in_proj_bias" if mod.in_proj_bias is not None else None
    if mod._qkv_same_embed_dim:
        weight = f"{name}.in_proj_weight"
        _packed(b, n, weight, bias, (tq, tk, tv), qk, vo, e)
    else:
        weight = f"{name}.q_proj_weight"
        for key, t, s in (("q", tq, qk), ("k", tk, qk), ("v", tv, vo)):
            b.entry(f"{name}.{key}_proj_weight", 0, s, n)
            b.entry(f"{name}.{key}_proj_weight", 1, t.space, n)
        if bias is not None:
            for off, s in ((0, qk), (e, qk), (2 * e, vo)):
                b.entry(bias, 0, s, n, offset=off)
    if mod.bias_k is not None:
        b.entry(f"{name}.bias_k", 2, qk, n)
        b.entry(f"{name}.bias_v", 2, vo, n)
    s_out = b.new(e)
    b.entry(f"{name}.out_proj.weight", 1, vo, n)
    b.entry(f"{name}.out_proj.weight", 0, s_out, n)
    if mod.out_proj.bias is not None:
        b.entry(f"{name}.out_proj.bias", 0, s_out, n)
    _layers(b, n, (f"{name}.in_proj", weight, bias), (f"{name}.out_proj",
            f"{name}.out_proj.weight", f"{name}.out_proj.bias" if mod.out_proj.bias is not None
            else None), tq, qk, vo, s_out)
    # what activation matching reads: the projections Q, K (query·key) and V (value·output)
    b.named_points += [(qk, f"{name}@q"), (qk, f"{name}@k"), (vo, f"{name}@v")]
    y = out[0] if isinstance(out, tuple) else out
    return _tag(s_out, y)


def _layers(b: _Builder, n: fx.Node, proj_in: tuple, proj_out: tuple, t_in, qk: int, vo: int,
            s_out: int) -> None:
    """The input projection (its rows open the query·key space) and the output projection,
    as layers of the graph: (name, weight key, bias key) each."""
    shape = tuple(n.args[0].meta["wl_shape"][1:]) if n.args else None
    b.producers.append((s_out, proj_out[0]))
    b.layers.append((Layer(proj_in[0], "linear", proj_in[1], proj_in[2], -1, -1, 1, shape,
                           None), t_in.space, qk))
    b.layers.append((Layer(proj_out[0], "linear", proj_out[1], proj_out[2], -1, -1, 1, None,
                           shape), vo, s_out))


def _tag(space: int, y: torch.Tensor):
    from weightlab.graph.trace import _Tag

    return _Tag(space, 1, y.dim() > 2)


def shifted_window_attention(b: _Builder, n: fx.Node, out):
    """torchvision's Swin attention: fused ``qkv`` (3C × C), ``proj``, a relative position
    bias (one column per head of its table), and in Swin V2 a per-head logit scale."""
    x = _arg(n, 0, "input")
    t = _token_tag(b, n, x, "input")
    qkv_w, proj_w, rel = _arg(n, 1, "qkv_weight"), _arg(n, 2, "proj_weight"), \
        _arg(n, 3, "relative_position_bias")
    heads = _arg(n, 5, "num_heads")
    qkv_b, proj_b, scale = _arg(n, 9, "qkv_bias"), _arg(n, 10, "proj_bias"), \
        _arg(n, 11, "logit_scale")
    keys = [b.tags.get(a) if isinstance(a, fx.Node) else None for a in (qkv_w, proj_w)]
    if not all(isinstance(k, str) for k in keys):
        raise WeightlabError(f"{n.name} (shifted_window_attention): its weights are not "
                             f"parameters of the model")
    e = b.size[b.find(t.space)]
    qk, vo = _heads(b, n, e, int(heads))
    bias = b.tags.get(qkv_b) if isinstance(qkv_b, fx.Node) else None
    _packed(b, n, keys[0], bias if isinstance(bias, str) else None, (t,), qk, vo, e)
    s_out = b.new(e)
    b.entry(keys[1], 1, vo, n)
    b.entry(keys[1], 0, s_out, n)
    pb = b.tags.get(proj_b) if isinstance(proj_b, fx.Node) else None
    if isinstance(pb, str):
        b.entry(pb, 0, s_out, n)
    head = b.head_tags.get(rel) if isinstance(rel, fx.Node) else None
    if isinstance(head, tuple):
        b.entry(head[0], head[1], qk, n, per_group=True)
    elif rel is not None:  # computed by a network (Swin V2's continuous position bias)
        b.fix(qk, f"{n.name}: the heads' position bias is computed by a network")
        b.fix(vo, f"{n.name}: tied to a fixed query·key space")
    ls = b.tags.get(scale) if isinstance(scale, fx.Node) else None
    if isinstance(ls, str):
        b.entry(ls, 0, qk, n, per_group=True)
    _layers(b, n, (keys[0].removesuffix(".weight"), keys[0], bias if isinstance(bias, str)
                   else None), (keys[1].removesuffix(".weight"), keys[1],
                                pb if isinstance(pb, str) else None), t, qk, vo, s_out)
    # Q, K, V of every token, read from the call's input (graph.taps: the fused projection)
    b.named_points += [(qk, f"{n.name}@q"), (qk, f"{n.name}@k"), (vo, f"{n.name}@v")]
    return _tag(s_out, out)


def relative_position_bias(b: _Builder, n: fx.Node, out):
    """The (1, H, N, N) bias gathered from a (positions × H) table: remembered per head."""
    table = _arg(n, 0, "relative_position_bias_table")
    key = b.tags.get(table) if isinstance(table, fx.Node) else None
    if isinstance(key, str):
        b.head_tags[n] = (key, 1)
        return None
    t = b.tag_of(table)
    if t is not None:  # a network's output (Swin V2): its channels are the heads
        b.fix(t.space, f"{n.name}: per-head position bias")
    return None  # no table entry: the attention using it fixes its head spaces


def patch_merging(b: _Builder, n: fx.Node, out):
    """Swin's 2×2 patch merging concatenates four neighbours' C channels: 4C channels, tile k
    at k·C … k·C + C − 1, all four moved by the one permutation of the space (the LayerNorm
    and the reduction after it hold one offset entry per tile)."""
    t = _token_tag(b, n, n.args[0], "input")
    if out.shape[-1] != 4 * b.size[b.find(t.space)]:
        raise WeightlabError(f"{n.name} (patch merging): {out.shape[-1]} channels out of "
                             f"{b.size[b.find(t.space)]}")
    from weightlab.graph.trace import _Tag

    return _Tag(t.space, 1, True, 4)


FUNCTIONS = {
    "torchvision.models.swin_transformer.shifted_window_attention": shifted_window_attention,
    "torchvision.models.swin_transformer._get_relative_position_bias": relative_position_bias,
    "torchvision.models.swin_transformer._get_relative_position_bias_v2":
        relative_position_bias,
    "torchvision.models.swin_transformer._patch_merging_pad": patch_merging,
}
