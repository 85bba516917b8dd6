"""Partially merged models for preserve-first merging (PFM; Qu & Horváth 2024, "Vanishing
Feature", adapted from ZipIt!'s partial zipping, Stoica et al. 2024).

The first k conv/linear layers of the traced graph (``graph.layers``, execution order) are
*preserved*: model A's and model B's own copies both run, with everything that depends only on
them (norms, activations, pooling, residual additions). Every value that crosses from this
prefix into the rest is merged at a *merge point*: for a free channel space s,

    f = Σ_k w_k·2·M_k,s f_k        (M_s = [M_A M_B] the joint merge, w = (½, ½): M_s [f_A; f_B])

along the channel axis (a flattened (N, C·r) value is C channels of r columns each); values of
fixed spaces (the input, the logits) are averaged with w. A value whose channels are made of
parts (a concatenation, a split or slice of a stream: ``graph.layouts``) is merged part by
part, with the block-diagonal of the parts' merges (a fixed part averaged in place). The
remainder runs the merged weights Σ_k w_k θ̃_k (weightlab_zipit.joint). k = 0 is the fully
merged model; k = L (every layer preserved) is the logit average of the two models, i.e. of
their aligned copies.

The result is a plain ``nn.Module`` (a torch.fx GraphModule inside a small wrapper) that can be
evaluated, normalized, counted, saved and rebuilt (:func:`rebuild` reads the checkpoint header
written by :func:`structure_header`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from weightlab.alignment import Alignment
from weightlab.errors import CheckpointError, UsageError
from weightlab.graph.spaces import FeatureGraph

from weightlab_zipit.joint import joint_form, merged_state, model_parts

STRUCTURE = "partial"
PLUGIN = "zipit"
BUILDER = "weightlab_zipit.partial:rebuild"


class MergePoint(nn.Module):
    """f = Σ_k blocks[k] · f_k along axis 1, for one free channel space. ``blocks`` is
    (K, C, C): model k's block of the merge matrix, already scaled by 2·w_k."""

    def __init__(self, blocks: torch.Tensor):
        super().__init__()
        self.register_buffer("blocks", blocks)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        c = self.blocks.shape[2]
        out = None
        for block, f in zip(self.blocks, features):
            # (N, C, …) or (N, C·r) → (N, C, positions): channel c owns its r columns / pixels
            y = block.to(f.dtype) @ f.reshape(f.shape[0], c, -1)
            out = y if out is None else out + y
        return out.reshape(features[0].shape)


class WeightedSum(nn.Module):
    """f = Σ_k w_k f_k for a fixed space (no alignment: the input, the logits)."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return sum(w.to(f.dtype) * f for w, f in zip(self.weights, features))


class PartialModel(nn.Module):
    """A partially merged model: ``net`` runs A's and B's preserved copies (``net.a``,
    ``net.b``), the merge points (``net.merge``) and the merged remainder (``net.m``).
    ``partial`` describes it (k, the number of layers, the preserved layer names)."""

    def __init__(self, net: fx.GraphModule, partial: dict[str, Any]):
        super().__init__()
        self.net = net
        self.partial = partial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_partial(models: Sequence[nn.Module], graph: FeatureGraph,
                  alignment: Alignment | None, k: int, input_shape: Sequence[int],
                  weights: Sequence[float] = (0.5, 0.5)) -> PartialModel:
    """The partially merged model (in eval mode) with the first ``k`` of ``graph.layers``
    preserved. ``alignment`` is a joint merge (ZipIt!, CCA) or a map of B onto A (a
    permutation; None = identity); ``weights`` = (1, 0) or (0, 1) gives a reference: the same
    structure computing model A (or B) expressed in the merged space."""
    if len(models) != 2:
        raise UsageError(f"a partially merged model combines two models, got {len(models)}")
    n_layers = len(graph.layers)
    if not 0 <= k <= n_layers:
        raise UsageError(f"--k {k}: expected 0 … {n_layers} (the model has {n_layers} conv/"
                         f"linear layers)")
    if graph.fx_graph is None:
        raise UsageError("preserve-first merging needs a model traced by torch.fx (this "
                         "model declares its feature spec by hand)")
    joint = joint_form(alignment, graph)
    preserved = [layer.name for layer in graph.layers[:k]]
    ref = models[0]
    p = next(iter(ref.parameters()))
    root = nn.Module()
    root.a, root.b = copy.deepcopy(models[0]).eval(), copy.deepcopy(models[1]).eval()
    root.m = copy.deepcopy(ref).eval()
    root.m.load_state_dict(merged_state(models, graph, joint, weights))
    root.merge = nn.Module()
    w = torch.tensor([float(v) for v in weights], device=p.device)
    parts = model_parts(joint, graph, weights)  # (D(w)·M_k, U_k) per space
    blocks = {s: torch.stack([wk * part.merges[s][0].to(w) for wk, part in zip(w, parts)])
              for s in joint.merges}

    modules: dict[tuple, str] = {}

    def merge_module(layout: list[tuple[int, int, int]] | None) -> str:
        """The merge point of a value with this channel layout: the block-diagonal of its
        parts' joint merges (one block for a plain space; several for channels made of parts:
        a concatenation, a chunk or slice of a stream), a fixed part averaged in place
        (w_k·I); all fixed or unknown: the plain weighted sum."""
        layout = [(o, z, i) for o, z, i in layout or []]
        if not any(i in blocks and not graph[i].fixed for _, _, i in layout):
            layout = []
        key = tuple(layout)
        if key not in modules:
            modules[key] = "fixed" if not layout else f"s{layout[0][2]}" \
                if len(layout) == 1 else f"c{len(modules)}"
            if not layout:
                mod = WeightedSum(w.to(p.dtype))
            else:
                total = sum(z for _, z, _ in layout)
                full = torch.zeros(len(w), total, total, device=p.device, dtype=p.dtype)
                for off, z, i in layout:
                    full[:, off:off + z, off:off + z] = blocks[i].to(full) \
                        if i in blocks and not graph[i].fixed else \
                        w.to(full)[:, None, None] * torch.eye(z, dtype=p.dtype,
                                                               device=p.device)
                mod = MergePoint(full)
            setattr(root.merge, modules[key], mod)
        return f"merge.{modules[key]}"

    g = _split_graph(graph, set(preserved), _tensor_nodes(ref, graph, input_shape),
                     merge_module)
    net = fx.GraphModule(root, g)
    return PartialModel(net, {"k": k, "layers": n_layers, "preserved": preserved,
                              "weights": [float(v) for v in weights]}).eval()


def _tensor_nodes(model: nn.Module, graph: FeatureGraph, input_shape: Sequence[int]
                  ) -> set[fx.Node]:
    """Nodes whose value is a tensor (sizes and shapes are not merged), from one run."""
    found: set[fx.Node] = set()

    class Run(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                found.add(n)
            return out

    p = next(iter(model.parameters()))
    was = model.training
    try:
        with torch.no_grad():
            Run(fx.GraphModule(model, graph.fx_graph)).run(
                torch.zeros(2, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)
    return found


def _split_graph(graph: FeatureGraph, preserved: set[str], tensors: set[fx.Node],
                 merge_module) -> fx.Graph:
    """A new fx graph: prefix nodes twice (targets under ``a.`` and ``b.``), a merge point for
    every prefix value the remainder (or the output) reads, the remainder once (``m.``).
    Values that do not depend on the input (parameters read with get_attr, constants) are
    copied into each part that uses them."""
    layers = {layer.name: layer for layer in graph.layers}
    part: dict[fx.Node, str] = {}  # "const" | "prefix" | "merged"
    for n in graph.fx_graph.nodes:
        ins = {part[a] for a in n.all_input_nodes}
        if n.op == "placeholder":
            part[n] = "prefix"
        elif n.op == "call_module" and n.target in layers and n.target not in preserved:
            part[n] = "merged"
        else:
            part[n] = "merged" if "merged" in ins else "prefix" if "prefix" in ins else "const"

    g = fx.Graph()
    env = {"a": {}, "b": {}, "m": {}}

    def copy_into(ctx: str, n: fx.Node) -> fx.Node:
        new = g.node_copy(n, lambda a: value(ctx, a))
        if n.op in ("call_module", "get_attr"):
            new.target = f"{ctx}.{n.target}"
        env[ctx][n] = new
        return new

    def value(ctx: str, a: fx.Node) -> fx.Node:
        if a in env[ctx]:
            return env[ctx][a]
        if part[a] == "const":
            return copy_into(ctx, a)
        # ctx == "m" and ``a`` is a prefix value: merge the two copies here
        if a.op == "placeholder" or a not in tensors:
            env["m"][a] = env["a"][a]  # the input, or a size: the same in both copies
        else:
            env["m"][a] = g.call_module(merge_module(_layout_of(a, graph, layers, part)),
                                        (env["a"][a], env["b"][a]))
        return env["m"][a]

    for n in graph.fx_graph.nodes:
        if n.op == "placeholder":
            env["a"][n] = env["b"][n] = g.node_copy(n)
        elif n.op == "output":
            g.output(fx.node.map_arg(n.args[0], lambda a: value("m", a)))
        elif part[n] == "prefix":
            copy_into("a", n)
            copy_into("b", n)
        elif part[n] == "merged":
            copy_into("m", n)
    g.lint()
    return g


def _layout_of(n: fx.Node, graph: FeatureGraph, layers: dict, part: dict
               ) -> list[tuple[int, int, int]] | None:
    """The channel layout of a prefix value (graph.layouts, recorded by the trace: the second
    piece of a split is its own space, a concatenation its parts at their offsets); for a value
    the trace kept no layout of, the space found by walking back to its layer."""
    if n.name in graph.layouts:
        return graph.layouts[n.name]
    s = _space_of(n, graph, layers, part)
    return None if s is None else [(0, graph[s].size, s)]


def _space_of(n: fx.Node, graph: FeatureGraph, layers: dict, part: dict) -> int | None:
    """The free channel space a prefix value lives in (None: a fixed space). Walks back
    through norms, activations, pooling, reshapes and residual additions (which all keep the
    space, the graph's own rules) to the conv/linear layer that produced it."""
    while True:
        if n.op == "placeholder":
            return None
        if n.op == "call_module" and n.target in layers:
            space = graph[layers[n.target].out_space]
            return None if space.fixed else space.id
        if n.op == "call_function" and n.target in (torch.cat, torch.concat):
            return None  # concatenated spaces are fixed
        ins = [a for a in n.all_input_nodes if part[a] != "const"]
        if not ins:
            return None
        n = ins[0]


def structure_header(model: PartialModel, matcher: dict | None) -> dict[str, Any]:
    """The checkpoint header entry that lets :func:`rebuild` make the same structure."""
    return {"plugin": PLUGIN, "builder": BUILDER, "kind": STRUCTURE, **model.partial,
            "matcher": matcher}


def rebuild(ckpt) -> PartialModel:
    """An empty partially merged model for a checkpoint written with
    :func:`structure_header` (its tensors are loaded by the caller)."""
    from weightlab import plugins
    from weightlab.graph import trace

    info, m = ckpt.extra.get("structure", {}), ckpt.model
    where = f"{ckpt.path}: " if ckpt.path else ""
    try:
        k, weights = int(info["k"]), [float(v) for v in info["weights"]]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{where}header 'structure' of a partially merged model needs k "
                              f"and weights") from None
    comp = plugins.registry().create("models", m["name"], m.get("params"))
    shape = tuple(m["input_shape"])
    base = [comp.build(shape, int(m["num_classes"])) for _ in range(2)]
    graph = trace(base[0], torch.zeros(2, *shape))
    if int(info.get("layers", len(graph.layers))) != len(graph.layers):
        raise CheckpointError(f"{where}written for {info['layers']} layers, but "
                              f"{m['name']} has {len(graph.layers)}")
    return build_partial(base, graph, None, k, shape, weights)
