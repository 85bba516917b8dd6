"""Read features at a graph's feature points during a forward pass.

A point is a module name (read with a forward hook) or an fx node name (read from a copy of
the traced graph whose output also returns that node). Either way the returned reader shares
the model's parameters, so it always sees the model's current weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.fx as fx
from torch import nn

from weightlab.errors import WeightlabError
from weightlab.graph.spaces import FeatureGraph

Reader = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def feature_reader(model: nn.Module, graph: FeatureGraph, points: Sequence[str]) -> Reader:
    """``reader(x) -> (output, {point: features})``; features are copies (later in-place ops
    of the model cannot change them)."""
    points = list(dict.fromkeys(points))
    if graph.fx_graph is None:
        return _hook_reader(model, points)
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out_value = g.graph_copy(graph.fx_graph, env)
    by_name = {n.name: n for n in env.values()}
    calls: dict[str, list[fx.Node]] = {}
    for n in env.values():
        if n.op == "call_module":
            calls.setdefault(n.target, []).append(n)
    taps = {}
    for p in points:
        name, _, layout = p.partition("@")  # "@last": a channels-last value (N, …, C)
        node = calls[name][0] if len(calls.get(name, ())) == 1 else by_name.get(name)
        if node is None:
            raise WeightlabError(f"feature point {p!r} is neither a module called once nor a "
                                 f"node of the traced graph")
        if layout in PROJECTIONS:  # attention's Q, K or V, computed from its inputs
            node = _projection(g, model, node, name, layout)
            layout = "last"
        elif layout.startswith(("parts:", "lastparts:")):
            # channels made of parts: SIZE channels from each offset, one after another along
            # the batch axis (every occurrence of a part is more samples of its channels)
            kind, offsets, size = layout.split(":")
            if kind == "lastparts":
                with g.inserting_after(node):
                    node = g.call_method("movedim", (node, -1, 1))
            pieces = []
            for off in offsets.split(","):
                with g.inserting_after(node if not pieces else pieces[-1]):
                    pieces.append(g.call_method("narrow", (node, 1, int(off), int(size))))
            with g.inserting_after(pieces[-1]):
                node = g.call_function(torch.cat, (pieces, 0))
            layout = ""
        elif layout.startswith("heads:"):  # (…, H, …, d, …): heads and head dims flattened
            h, d = (int(i) for i in layout.removeprefix("heads:").split(","))
            with g.inserting_after(node):
                moved = g.call_method("movedim", (node, (h, d), (-2, -1)))
            with g.inserting_after(moved):
                node = g.call_method("flatten", (moved, -2))
            layout = "last"
        with g.inserting_after(node):
            src = g.call_method("movedim", (node, -1, 1)) if layout == "last" else node
        with g.inserting_after(src):
            taps[p] = g.call_method("clone", (src,))
    g.output((out_value, taps))
    gm = fx.GraphModule(model, g)
    return gm.forward


PROJECTIONS = {"q": 0, "k": 1, "v": 2}


def _projection(g: fx.Graph, model: nn.Module, node: fx.Node, name: str, which: str
                ) -> fx.Node:
    """Insert x W_ᵢᵀ + b_ᵢ (i = q, k or v) of ``nn.MultiheadAttention`` ``name`` before its
    call, from the call's own query/key/value argument (channels last); for a functional
    attention with a fused projection (torchvision's ``shifted_window_attention(x,
    qkv_weight, …, qkv_bias)``) from its input and the fused weight's i-th third."""
    import torch.nn.functional as F

    i = PROJECTIONS[which]
    if node.op == "call_function":
        x, w = node.args[0], node.args[1]
        b = node.args[9] if len(node.args) > 9 else node.kwargs.get("qkv_bias")
        e = x.meta["wl_shape"][-1]  # the traced shape (graph_copy keeps meta)
        with g.inserting_before(node):
            w = g.call_method("narrow", (w, 0, i * e, e))
            if b is not None:
                b = g.call_method("narrow", (b, 0, i * e, e))
            return g.call_function(F.linear, (x, w, b))
    mod = model.get_submodule(name)
    if not isinstance(mod, nn.MultiheadAttention):
        raise WeightlabError(f"feature point {name}@{which}: {name} is not an attention module")
    x = node.args[i] if len(node.args) > i else node.kwargs[("query", "key", "value")[i]]
    e = mod.embed_dim
    with g.inserting_before(node):
        if mod._qkv_same_embed_dim:
            w = g.call_method("narrow", (g.get_attr(f"{name}.in_proj_weight"), 0, i * e, e))
        else:
            w = g.get_attr(f"{name}.{which}_proj_weight")
        b = None if mod.in_proj_bias is None else g.call_method(
            "narrow", (g.get_attr(f"{name}.in_proj_bias"), 0, i * e, e))
        return g.call_function(F.linear, (x, w, b))


def _hook_reader(model: nn.Module, points: list[str]) -> Reader:
    modules = dict(model.named_modules())
    missing = [p for p in points if p not in modules]
    if missing:
        raise WeightlabError(f"feature point {missing[0]!r} is not a module of "
                             f"{type(model).__name__} (hand-declared specs name modules)")

    def read(x: torch.Tensor):
        feats: dict[str, torch.Tensor] = {}
        hooks = [modules[p].register_forward_hook(
            lambda _m, _i, o, p=p: feats.__setitem__(p, o.clone())) for p in points]
        try:
            out = model(x)
        finally:
            for h in hooks:
                h.remove()
        return out, feats

    return read
