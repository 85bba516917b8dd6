"""Build a :class:`FeatureGraph` from the model itself with torch.fx.

The model is traced symbolically, then run once on the example input node by node (an fx
Interpreter), so every rule below sees real shapes. Each tensor value gets a tag (space,
repeat): conv/linear outputs open a new space; norms, activations, pooling and dropout carry
it; elementwise ops join the spaces of their operands (union-find: residual additions);
flatten multiplies ``repeat`` by H·W. An entry claimed by two spaces (a shared module) joins
them too. A concatenation along the channels, or a chunk of a space already tied elsewhere,
makes a composite of part spaces side by side (graph.split). The input and anything reaching
the output are fixed.
"""

from __future__ import annotations

import contextlib
import operator
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from weightlab.errors import WeightlabError
from weightlab.graph import attention, heads, ops, split
from weightlab.graph.spaces import Entry, FeatureGraph, Layer, Space


@dataclass
class _Tag:
    space: int
    repeat: int = 1
    last: bool = False  # channels on the last axis (channels-last: N, H, W, C), not axis 1
    # the channel axis holds ``tiles`` copies of the space side by side, tile-major (Swin's patch
    # merging flattens 2×2 neighbours' C channels into 4C): tile k at indices k·C … k·C + C − 1
    tiles: int = 1

    def dim(self, ndim: int) -> int:
        return ndim - 1 if self.last else 1


@dataclass(frozen=True)
class _Packed:
    """Parameters concatenated along their only axis: (key, length) per piece."""

    pieces: tuple[tuple[str, int], ...]


class _Tracer(fx.Tracer):
    """torch.nn modules are leaves (fx's default), and so are weightlab's own norms."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ops.NORM_MODULES) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example_input: torch.Tensor) -> FeatureGraph:
    """The feature-space graph of ``model``. A model may declare it by hand with
    ``weightlab_feature_spec(self)`` (returning a FeatureGraph or a list of Spaces)."""
    state = model.state_dict()
    where = type(model).__name__
    if hasattr(model, "weightlab_feature_spec"):
        spec = model.weightlab_feature_spec()
        graph = spec if isinstance(spec, FeatureGraph) else FeatureGraph.from_spaces(
            list(spec), model)
        return graph.check(state, f"{where}.weightlab_feature_spec")
    tracer = _Tracer()
    try:
        fx_graph = tracer.trace(model)
    except Exception as e:  # any tracing failure becomes one clear line
        raise WeightlabError(_trace_error(where, e)) from None
    gm = fx.GraphModule(model, fx_graph)
    builder = _Builder(gm)
    builder.state_keys = set(state)  # not fx's constants (_tensor_constant0) registered on gm
    p = next(iter(model.parameters()), None)
    x = example_input
    if p is not None and x.is_floating_point():
        x = x.to(device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            builder.run(x)
    except WeightlabError as e:
        # an unsupported operation: torch.fx appends "While executing %node …" lines to the
        # message; keep the one line that says what and where
        first = str(e).strip().splitlines()[0]
        if "weightlab_feature_spec" not in first:
            first += "; define weightlab_feature_spec(self) on the model"
        raise WeightlabError(first if first.startswith(where) else f"{where}: {first}") \
            from None
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightlabError(f"{where}: the example input of shape {list(x.shape)} does not "
                             f"run through the model: {first}") from None
    finally:
        model.train(was_training)
    return builder.finish(fx_graph).check(state, where)


def _trace_error(where: str, e: Exception) -> str:
    """Name the user's line that blocked tracing (the last frame outside torch)."""
    torch_dir = str(Path(torch.__file__).parent)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith(torch_dir) and f.filename != __file__]
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "control flow" in msg:
        msg = "data-dependent control flow (a Python branch or loop on a tensor value)"
    at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} `{frames[-1].line}`" \
        if frames else ""
    return (f"cannot trace {where}: {msg}{at}; make forward traceable by torch.fx or define "
            f"weightlab_feature_spec(self) on the model")


class _Builder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.modules = dict(gm.named_modules())
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: dict[int, str] = {}
        self.tags: dict[fx.Node, _Tag | str] = {}  # a str tag: a get_attr tensor's key
        self.entries: dict[tuple[str, int, int, bool], tuple[int, int]] = {}
        self.param_shapes: dict[str, tuple[int, ...]] = {}  # get_attr key → its real shape
        self.groups: dict[int, int] = {}  # raw space → attention heads
        self.ties: list[tuple[int, int]] = []  # (query·key, value·output) spaces of a head
        self.head_tags: dict[fx.Node, tuple[str, int]] = {}  # per-head bias → (table, axis)
        self.dead: set[int] = set()  # spaces split into parts (a fused qkv output)
        # composite spaces (graph.split): root → [(offset, part)], parts side by side
        self.split: dict[int, list[tuple[int, int]]] = {}
        self.rigid: dict[int, int] = {}  # head space → head dim, channels fixed within heads
        # a layer's bias concatenated from parameters in forward: space → [(key, length)]
        self.packed: dict[int, list[tuple[str, int]]] = {}
        self.state_keys = set(gm.state_dict())
        self.producers: list[tuple[int, str]] = []
        self.norms: list[tuple[int, str]] = []
        self.points: list[tuple[int, fx.Node]] = []
        self.named_points: list[tuple[int, str]] = []  # attention's Q/K/V: "NAME@q" …
        self.fallback: list[tuple[int, fx.Node]] = []
        self.layers: list[tuple[Layer, int, int]] = []
        self.calls: dict[str, int] = {}
        for n in gm.graph.nodes:
            if n.op == "call_module":
                self.calls[n.target] = self.calls.get(n.target, 0) + 1

    # union-find over raw space ids
    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int, node: fx.Node) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            if self.size[a] != self.size[b]:
                raise WeightlabError(f"{node.name} ({ops.op_name(node)}) joins channel spaces of "
                                     f"{self.size[a]} and {self.size[b]} channels")
            if a in self.split or b in self.split:  # parts side by side: joined part by part
                return split.join(self, node, a, b)
            self.parent[b] = a
            if b in self.fixed:
                self.fixed.setdefault(a, self.fixed[b])
        return a

    def entry(self, key: str, axis: int, space: int, node: fx.Node, repeat: int = 1,
              offset: int = 0, per_group: bool = False) -> None:
        if self.find(space) in self.split:  # a composite: one entry per leaf, at its offset
            if per_group:
                raise WeightlabError(f"{node.name}: per-head tensor {key} on channels made of "
                                     f"parts")
            for off, _, leaf in split.leaves(self, space):
                self.entry(key, axis, leaf, node, repeat, offset + off * repeat)
            return
        old = self.entries.get((key, axis, offset, per_group))
        if old is not None:  # a shared module or parameter: its spaces are one
            if old[1] != repeat:
                raise WeightlabError(f"{node.name}: {key} axis {axis} is used with different "
                                     f"flatten factors ({old[1]} and {repeat})")
            space = self.union(old[0], space, node)
        self.entries[(key, axis, offset, per_group)] = (space, repeat)

    def fix(self, space: int, reason: str) -> None:
        for _, _, leaf in split.leaves(self, space):
            self.fixed.setdefault(leaf, reason)

    def is_fixed(self, space: int) -> bool:
        return all(leaf in self.fixed for _, _, leaf in split.leaves(self, space))

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        try:
            tag = self.rule(n, out)
        except WeightlabError:
            tag = self.opaque(n, out)
            if tag is None:
                raise
        if tag is not None:
            self.tags[n] = tag
        return out

    def opaque(self, n: fx.Node, out) -> _Tag | None:
        """A reshape or transpose no rule covers (ShuffleNet's channel shuffle) of channels that
        are all fixed already: no permutation reaches them, so its output is a new fixed space
        along axis 1. Channels made of parts (a concatenation) are fixed here first: fixing a
        space only removes permutations, and before composites a concatenation was fixed
        anyway. None where a plain free space is involved, or for any other operation."""
        tags = [self.tag_of(a) for a in ops.flat_nodes((n.args, n.kwargs))]
        tags = [t for t in tags if t is not None]
        shape_op = n.target in ops.RESHAPE or n.target in (torch.permute, torch.transpose) or (
            n.op == "call_method" and n.target in (*ops.RESHAPE_METHODS, "permute", "transpose"))
        if not shape_op or not tags or not isinstance(out, torch.Tensor) \
                or out.dim() < 2 or any(
                not self.is_fixed(t.space) and self.find(t.space) not in self.split
                for t in tags):
            return None
        for t in tags:
            self.fix(t.space, f"concatenated channels reshaped at {n.name} ({ops.op_name(n)})")
        s = self.new(out.shape[1])
        self.fix(s, f"computed at {n.name} ({ops.op_name(n)}) from fixed channels")
        return _Tag(s)

    def tag_of(self, a) -> _Tag | None:
        t = self.tags.get(a) if isinstance(a, fx.Node) else None
        return t if isinstance(t, _Tag) else None

    def rule(self, n: fx.Node, out):
        if n.op == "placeholder":
            if isinstance(out, torch.Tensor) and out.dim() >= 2:
                s = self.new(out.shape[1])
                self.fix(s, "input")
                return _Tag(s)
            return None
        if n.op == "get_attr":
            if isinstance(out, torch.Tensor):
                self.param_shapes[n.target] = tuple(out.shape)
                return n.target
            return None
        if n.op == "output":
            for a in ops.flat_nodes(n.args):
                if (t := self.tag_of(a)) is not None:
                    self.fix(t.space, "logits")
            return None
        inputs = [(a, self.tag_of(a)) for a in ops.flat_nodes((n.args, n.kwargs))]
        tagged = [(a, t) for a, t in inputs if t is not None]
        if any(t.tiles > 1 for _, t in tagged):
            return self.tiled(n, tagged, out)
        if n.op == "call_module" and isinstance(self.modules[n.target], nn.MultiheadAttention):
            return attention.multihead(self, n, self.modules[n.target], out)
        name = ops.op_name(n)
        if name in attention.FUNCTIONS:
            return attention.FUNCTIONS[name](self, n, out)
        head_args = [self.tags[a] for a in ops.flat_nodes((n.args, n.kwargs))
                     if isinstance(self.tags.get(a), heads.TAGS)]
        if head_args and not (tagged and all(isinstance(t, heads.HeadBias) for t in head_args)):
            return heads.rule(self, n, out)
        if isinstance(out, tuple) and tagged and any(isinstance(o, torch.Tensor) for o in out):
            if (parts := self.part_split(n, tagged[0], out)) is not None:
                return parts
            if n.target in (torch.chunk, torch.split, torch.tensor_split, torch.unbind) or (
                    n.op == "call_method" and n.target in ("chunk", "split", "tensor_split",
                                                           "unbind")):
                t = tagged[0][1]  # pieces along another axis each keep the channels
                return heads.Parts(tuple(t for _ in out))
            raise WeightlabError(f"cannot trace the feature spaces: unsupported operation "
                                 f"{ops.op_name(n)} at node {n.name} returning a tuple")
        if n.target is operator.getitem and isinstance(n.args[0], fx.Node) \
                and n.args[0].meta.get("wl_shape") is None:
            # an item of a tuple (attention returns (output, weights)): the output's tag
            t = self.tag_of(n.args[0])
            return t if t is not None and n.args[1] == 0 and isinstance(out, torch.Tensor) \
                else None
        if not isinstance(out, torch.Tensor):
            return None  # sizes, shapes: no channels
        if n.op == "call_module":
            return self.module_rule(n, self.modules[n.target], tagged, out)
        fn = n.target
        is_method = n.op == "call_method"
        if not tagged:
            src = n.args[0] if n.args else None
            if is_method and fn in ("expand", "expand_as", "to", "type_as", "contiguous") \
                    and isinstance(self.tags.get(src), str) \
                    and len(src.meta["wl_shape"]) == out.dim():
                return self.tags[src]  # a view of a parameter (a class token expanded)
            if fn in (torch.cat, torch.concat) and len(n.args[0]) > 1 and all(
                    isinstance(self.tags.get(a), str) and len(a.meta["wl_shape"] or ()) == 1
                    for a in n.args[0]) and out.dim() == 1:
                # parameters concatenated (BEiT's qkv bias): remembered piece by piece
                return _Packed(tuple((self.tags[a], a.meta["wl_shape"][0]) for a in n.args[0]))
            if fn is operator.getitem and isinstance(self.tags.get(src), str) and (
                    bias := heads.gathered(self, n, out)) is not None:
                return bias  # a per-head bias table gathered by a position index
            if (fn in ops.RESHAPE or (is_method and fn in ops.RESHAPE_METHODS)) \
                    and isinstance(self.tags.get(src), str) \
                    and sorted(out.shape)[-1] == ops.numel(out.shape):
                return self.tags[src]  # a per-channel vector viewed as (1, C, 1, 1)
            return None  # a constant computed from parameters or sizes
        first = tagged[0][1]
        if fn is operator.getitem:
            return self.index(n, tagged[0], out)
        if (fn in ops.ACT_FNS) or (is_method and fn in ops.ACT_METHODS):
            self.carry_check(n, tagged, out)
            if first.repeat == 1:
                self.points.append((first.space, n))
            return first
        if fn in (torch.permute,) or (is_method and fn == "permute"):
            return self.permute(n, tagged[0], out)
        if fn is F.pad:
            return self.pad(n, tagged[0], out)
        if fn is torch.roll or (is_method and fn == "roll"):  # a shifted window: tokens move
            dims = n.args[2] if len(n.args) > 2 else n.kwargs.get("dims")
            dims = [dims] if isinstance(dims, int) else list(dims or [])
            ndim = out.dim()
            if dims and not {d % ndim for d in dims} & {0, first.dim(ndim)}:
                return first
        if fn is F.linear:
            return self.linear_fn(n, tagged[0], out)
        if fn in (torch.transpose, torch.swapaxes) or (is_method and fn in (
                "transpose", "swapaxes")):
            return self.transpose(n, tagged[0], out)
        if fn is F.layer_norm:
            return self.layer_norm(n, tagged[0], out)
        if fn in ops.CARRY_FNS or (is_method and fn in ops.CARRY_METHODS) or \
                ops.op_name(n) in ops.CARRY_FN_NAMES:
            self.carry_check(n, tagged, out)
            return first
        if fn in ops.ELEMENTWISE or (is_method and fn in ops.ELEMENTWISE_METHODS):
            return self.elementwise(n, tagged, out)
        if fn in ops.RESHAPE or (is_method and fn in ops.RESHAPE_METHODS):
            return self.reshape(n, tagged[0], out)
        if fn in ops.REDUCE or (is_method and fn in ops.REDUCE_METHODS):
            ndim = len(tagged[0][0].meta["wl_shape"])
            dims = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
            dims = [dims] if isinstance(dims, int) else list(dims or [])
            c_dim = first.dim(ndim)
            # (the batch axis too where channels are last: sequence-first tokens (L, N, C))
            kept = {c_dim} if first.last else {0, c_dim}
            if dims and first.repeat == 1 and not {d % ndim for d in dims} & kept:
                # a reduction over spatial or token axes keeps the channels
                return _Tag(first.space, 1, first.last and out.dim() > 2)
        if fn in (torch.cat, torch.concat):
            return self.concat(n, tagged, out)
        raise WeightlabError(f"cannot trace the feature spaces: unsupported operation "
                             f"{ops.op_name(n)} at node {n.name} on a {tuple(out.shape)} tensor; "
                             f"define weightlab_feature_spec(self) on the model")

    def carry_check(self, n: fx.Node, tagged, out) -> None:
        t = tagged[0][1]
        if out.dim() < 2 or out.shape[t.dim(out.dim())] != self.size[self.find(t.space)] \
                * t.repeat:
            raise WeightlabError(f"{n.name} ({ops.op_name(n)}) changes the channel axis of its "
                                 f"input")

    def elementwise(self, n: fx.Node, tagged, out):
        t0 = tagged[0][1]
        space = t0.space
        for _, t in tagged[1:]:
            if t.last != t0.last:
                raise WeightlabError(f"{n.name} ({ops.op_name(n)}) combines channels-first and "
                                     f"channels-last features")
            if t.repeat != t0.repeat:
                raise WeightlabError(f"{n.name} ({ops.op_name(n)}) mixes flattened and unflattened "
                                     f"features")
            space = self.union(space, t.space, n)
        for a in ops.flat_nodes(n.args):
            key = self.tags.get(a)
            if isinstance(key, str):  # a parameter: a scalar, or along the channels (an entry)
                view = a.meta["wl_shape"]  # as used here (a parameter, or an expanded view)
                p = self.param_shapes.get(key, view)
                if view is None or ops.numel(p) == 1:
                    continue
                # the parameter's axis that broadcasts against the channel axis (a position
                # embedding (1, T, C) added to channels-last tokens: its last axis)
                c_dim = t0.dim(out.dim())
                axis = c_dim - (out.dim() - len(view))  # broadcasting aligns from the right
                if len(p) != len(view) and axis >= 0 and view[axis] == ops.numel(view) \
                        == ops.numel(p):  # a vector viewed with unit axes: its long axis
                    axis = list(p).index(max(p))
                elif len(p) != len(view):
                    axis = -1
                if axis < 0 or p[axis] != out.shape[c_dim] or t0.repeat != 1:
                    raise WeightlabError(f"{n.name} ({ops.op_name(n)}): parameter {key} of shape "
                                         f"{list(p)} does not broadcast per channel")
                self.entry(key, axis, space, n)
            elif isinstance(a, fx.Node) and not isinstance(key, _Tag) and a.meta.get("wl_shape") \
                    and ops.numel(a.meta["wl_shape"]) > 1:
                raise WeightlabError(f"{n.name} ({ops.op_name(n)}) combines features with a "
                                     f"computed tensor of shape {list(a.meta['wl_shape'])}")
        self.carry_check(n, [(None, _Tag(space, t0.repeat, t0.last))], out)
        return _Tag(space, t0.repeat, t0.last)

    def permute(self, n: fx.Node, arg, out):
        """Moving the channel axis between position 1 and the last (channels-last layers:
        ConvNeXt's LayerNorm and pointwise linears); other axes may move freely."""
        node, t = arg
        ndim = out.dim()
        dims = n.args[1:] if len(n.args) > 1 else n.kwargs.get("dims")
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = dims[0]
        dims = [int(d) % ndim for d in dims]
        new = dims.index(t.dim(ndim))  # where the channel axis goes
        if t.repeat != 1 or new not in (1, ndim - 1) or dims[0] != 0:
            raise WeightlabError(f"{n.name} ({ops.op_name(n)}) moves the channel axis of a "
                                 f"{list(node.meta['wl_shape'])} tensor to position {new}")
        return _Tag(t.space, 1, new == ndim - 1 and ndim > 2)

    def part_split(self, n: fx.Node, arg, out):
        """chunk/split of the channels into parts along the channel axis (MaxViT's q, k, v =
        qkv.chunk(3, dim=-1); CSPNet's x.split((c/2, c/2), dim=1)): a layer's fresh output
        space becomes one space per part; channels already tied elsewhere are fixed and each
        part is a fixed space of its own."""
        fn, method = n.target, n.op == "call_method"
        if not (fn in (torch.chunk, torch.split, torch.tensor_split)
                or (method and fn in ("chunk", "split", "tensor_split"))):
            return None
        node, t = arg
        x = node.meta["wl_shape"]
        dim = n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 0)
        c_dim = t.dim(len(x))
        if int(dim) % len(x) != c_dim:
            return None  # along another axis: every piece keeps the channels
        sizes = [o.shape[c_dim] for o in out]
        if len(sizes) == 1:  # one piece: the channels themselves
            return heads.Parts((t,))
        if t.repeat != 1:
            raise WeightlabError(f"{n.name} ({ops.op_name(n)}) splits flattened channels")
        return heads.Parts(tuple(_Tag(s, 1, t.last) for s in self.cut_parts(n, t, sizes)))

    def cut_parts(self, n: fx.Node, t, sizes: list[int]) -> tuple[int, ...]:
        """The spaces of ``t``'s channels cut into consecutive ``sizes``: new spaces for a
        layer's fresh output, a composite's pieces for channels tied elsewhere, else fixed."""
        if self.find(t.space) not in self.split:  # (cut before: DPN slices a value twice)
            with contextlib.suppress(WeightlabError):
                return heads.part_spaces(self, n, t.space, sizes)
        with contextlib.suppress(WeightlabError):  # tied elsewhere (a residual stream):
            return split.pieces(self, n, t.space, sizes)  # a composite of the pieces
        self.fix(t.space, f"split into parts at {n.name}")
        spaces = tuple(self.new(z) for z in sizes)
        for s in spaces:
            self.fix(s, f"a part of channels split at {n.name}")
        return spaces

    def tiled(self, n: fx.Node, tagged, out):
        """Channels tiled side by side (after a patch merging): a LayerNorm over all of them
        (its mean and variance do not depend on their order; γ and β hold one tile each), a
        linear layer reading them (one block of input columns per tile), or a carry."""
        node, t = tagged[0]
        mod = self.modules.get(n.target) if n.op == "call_module" else None
        c = self.size[self.find(t.space)]
        width = c * t.tiles
        if len(tagged) == 1 and t.repeat == 1 and t.last and out.dim() >= 2 \
                and node.meta["wl_shape"][-1] == width:
            if isinstance(mod, nn.LayerNorm) and not ops.channel_layer_norm(mod) \
                    and tuple(mod.normalized_shape) == (width,) and out.shape[-1] == width:
                for pname, tensor in mod.named_parameters(recurse=False):
                    if tensor.dim() == 1:
                        for k in range(t.tiles):
                            self.entry(f"{n.target}.{pname}", 0, t.space, n, offset=k * c)
                self.norms.append((t.space, n.target))
                return t
            if isinstance(mod, nn.Linear):
                s_out = self.new(out.shape[-1])
                for k in range(t.tiles):
                    self.entry(f"{n.target}.weight", 1, t.space, n, offset=k * c)
                self.entry(f"{n.target}.weight", 0, s_out, n)
                if mod.bias is not None:
                    self.entry(f"{n.target}.bias", 0, s_out, n)
                self.producers.append((s_out, n.target))
                self.layers.append((Layer(n.target, "linear", f"{n.target}.weight",
                                          f"{n.target}.bias" if mod.bias is not None else None,
                                          -1, -1, 1, tuple(node.meta["wl_shape"][1:]),
                                          tuple(out.shape[1:])), t.space, s_out))
                return _Tag(s_out, 1, out.dim() > 2)
            if (isinstance(mod, ops.CARRY_MODULES) or n.target in ops.CARRY_FNS or (
                    n.op == "call_method" and n.target in ops.CARRY_METHODS)) \
                    and out.shape[-1] == width:
                return t
        raise WeightlabError(f"{n.name} ({ops.op_name(n) if mod is None else type(mod).__name__})"
                             f" on channels tiled by a patch merging is not supported")

    def linear_fn(self, n: fx.Node, arg, out):
        """F.linear(x, module.weight, module.bias) (timm's Linear subclass): a linear layer."""
        import types

        args = list(n.args) + [n.kwargs.get("weight"), n.kwargs.get("bias")][len(n.args) - 1:]
        keys = [self.tags.get(a) if isinstance(a, fx.Node) else None for a in args[1:3]]
        w = keys[0]
        packed = keys[1] if isinstance(keys[1], _Packed) else None
        if not isinstance(w, str) or not w.endswith(".weight") or (
                args[2] is not None and packed is None
                and keys[1] != w.removesuffix(".weight") + ".bias"):
            raise WeightlabError(f"{n.name} (linear) with a computed weight or bias")
        mod = types.SimpleNamespace(bias=None if packed else args[2],
                                    in_features=self.param_shapes[w][1])
        node, t = arg
        res = self.layer(n, mod, node, t, out, name=w.removesuffix(".weight"))
        if packed is not None:  # its pieces become entries when the output splits into parts
            self.packed[self.find(res.space)] = list(packed.pieces)
        return res

    def pad(self, n: fx.Node, arg, out):
        """F.pad of other axes than the channels' (a window partition's spatial padding)."""
        node, t = arg
        pad = list(n.args[1] if len(n.args) > 1 else n.kwargs["pad"])
        c_dim = t.dim(out.dim())
        i = out.dim() - 1 - c_dim  # pad pairs run from the last axis backwards
        if t.repeat != 1 or (2 * i + 1 < len(pad) and (pad[2 * i] or pad[2 * i + 1])):
            raise WeightlabError(f"{n.name} (pad) pads the channel axis")
        return t

    def transpose(self, n: fx.Node, arg, out):
        """Swapping two axes: a permutation of the axes (the channel axis between 1 and last)."""
        node, t = arg
        ndim = out.dim()
        a, b = (int(d) % ndim for d in n.args[1:3])
        dims = list(range(ndim))
        dims[a], dims[b] = dims[b], dims[a]
        new = dims.index(t.dim(ndim))
        if t.repeat != 1 or new not in (1, ndim - 1) or dims[0] != 0:
            raise WeightlabError(f"{n.name} ({ops.op_name(n)}) moves the channel axis of a "
                                 f"{list(node.meta['wl_shape'])} tensor to position {new}")
        return _Tag(t.space, 1, new == ndim - 1 and ndim > 2)

    def index(self, n: fx.Node, arg, out):
        """x[…] keeping the channel axis whole (the class token x[:, 0] of channels-last
        tokens, a crop of a map): the index must not touch the batch or channel axis — or a
        contiguous range of the channels alone (GhostNet's ``out[:, :c]``, DPN's dual paths
        ``x[:, :c]``/``x[:, c:]``, ReXNet's partial residual): one piece of the channels cut
        at the range's ends, as a chunk would (:meth:`cut_parts`)."""
        node, t = arg
        x = node.meta["wl_shape"]
        idx = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
        c_dim = t.dim(len(x))
        whole = slice(None, None, None)
        if (piece := self.channel_range(n, t, x, idx, c_dim, out)) is not None:
            return piece
        ok = t.repeat == 1 and Ellipsis not in idx and None not in idx and len(idx) <= len(x) \
            and (len(idx) < 1 or idx[0] == whole) and (len(idx) <= c_dim or idx[c_dim] == whole)
        if not ok or out.dim() < 2 or out.shape[t.dim(out.dim()) if out.dim() > 2 else 1] \
                != x[c_dim]:
            raise WeightlabError(f"{n.name} (indexing) selects {idx} of a {list(x)} tensor, "
                                 f"which cuts its channel axis")
        return _Tag(t.space, 1, t.last and out.dim() > 2)

    def channel_range(self, n: fx.Node, t, x, idx: tuple, c_dim: int, out):
        """``x[:, a:b]`` (step 1, every other axis whole): the piece [a, b) of the channels
        (``t`` itself when it is all of them); None for any other index."""
        whole = slice(None, None, None)
        if t.repeat != 1 or not c_dim < len(idx) <= len(x) \
                or not isinstance(idx[c_dim], slice) or idx[c_dim].step not in (None, 1) \
                or any(i != whole for i in idx[:c_dim] + idx[c_dim + 1:]) \
                or out.dim() != len(x):
            return None
        c = x[c_dim]
        start, stop, _ = idx[c_dim].indices(c)
        if start == 0 and stop == c:
            return t
        if stop <= start:
            return None
        sizes = [z for z in (start, stop - start, c - stop) if z]
        return _Tag(self.cut_parts(n, t, sizes)[1 if start else 0], 1, t.last)

    def layer_norm(self, n: fx.Node, arg, out):
        """F.layer_norm over exactly the channel axis (channels-last, or (N, C)): per-position
        normalization that commutes with permuting channels; γ and β are entries."""
        node, t = arg
        shape = n.args[1] if len(n.args) > 1 else n.kwargs.get("normalized_shape")
        c = self.size[self.find(t.space)]
        if t.repeat != 1 or list(shape) != [c] or not (t.last or out.dim() == 2):
            raise WeightlabError(f"{n.name} (layer_norm) normalizes over {list(shape)} on a "
                                 f"{list(out.shape)} tensor, not over its channels")
        for a in list(n.args[2:4]) + [n.kwargs.get("weight"), n.kwargs.get("bias")]:
            key = self.tags.get(a) if isinstance(a, fx.Node) else None
            if isinstance(key, str):
                self.entry(key, 0, t.space, n)
        return t

    def reshape(self, n: fx.Node, arg, out):
        node, t = arg
        x = node.meta["wl_shape"]
        if tuple(out.shape) == x:
            return t
        if t.last and t.repeat == 1 and (h := heads.split(self, n, t, x, out)) is not None:
            return h  # channels into (parts,) heads and head dims: attention by hand
        if not t.last and t.repeat == 1 and not self.is_fixed(t.space) \
                and self.find(t.space) not in self.split and (
                h := heads.split_first(self, n, t, x, out)) is not None:
            return h  # (B, C, H, W) into (B, heads, dh, H·W): attention on a feature map
        if t.repeat == 1 and out.dim() >= 2 and (t.last or len(x) == 2) \
                and out.shape[-1] == x[-1] and (len(x) > 2 or out.dim() > 2):
            # the channel axis last and untouched (row-major: the last axis of equal size keeps
            # its indices): token grids ↔ sequences, window partitions, (N, C) rows of tokens
            # and back (LeViT's BatchNorm over tokens flattened with the batch)
            return _Tag(t.space, 1, out.dim() > 2)
        if t.repeat == 1 and not t.last and out.dim() > 2 and tuple(out.shape[:2]) == tuple(
                x[:2]):  # the first two axes (batch, channels) untouched
            return _Tag(t.space, 1, False)
        k = out.dim() - 1
        if t.last and t.repeat == 1 and 2 < len(x) and 1 < k < len(x) - 1 \
                and tuple(out.shape[:k]) == tuple(x[:k]) and out.shape[-1] == ops.numel(x[k:]):
            # trailing neighbour axes flattened with the channels (…, 2, 2, C) → (…, 4C):
            # each neighbour's C channels in turn, all in one permutation
            return _Tag(t.space, 1, True, ops.numel(x[k:-1]))
        if t.last:
            raise WeightlabError(f"{n.name} ({ops.op_name(n)}) reshapes a channels-last "
                                 f"{list(x)} tensor to {list(out.shape)}")
        if len(x) >= 2 and out.dim() == 2 and out.shape[0] == x[0] and out.shape[1] == ops.numel(
                x[1:]):  # flatten: channel c owns columns c·HW … c·HW + HW − 1
            return _Tag(t.space, t.repeat * ops.numel(x[2:]))
        raise WeightlabError(f"{n.name} ({ops.op_name(n)}) reshapes {list(x)} to "
                             f"{list(out.shape)}, which mixes channels; only flattening "
                             f"(N, C, …) → (N, C·…) is supported")

    def concat(self, n: fx.Node, tagged, out):
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0) % out.dim()
        t0 = tagged[0][1]
        c_dim = t0.dim(out.dim())
        items = n.args[0] if n.args else n.kwargs.get("tensors")
        tags = [self.tag_of(a) for a in items]
        if dim == c_dim and all(t is not None and t.repeat == 1 and t.tiles == 1
                                and t.last == t0.last for t in tags):
            # channels of several spaces side by side: a composite (graph.split), each input's
            # channels keeping their space at their offset
            if len(tags) == 1:
                return t0
            return _Tag(split.compose(self, [t.space for t in tags]), 1, t0.last)
        if dim == c_dim:  # a constant or flattened channels among them: all fixed
            s = self.new(out.shape[c_dim])
            for _, t in tagged:
                self.fix(t.space, f"concatenated at {n.name}")
            self.fix(s, f"concatenation at {n.name}")
            return _Tag(s, 1, t0.last)
        # along another axis (tokens: a class token before the patches): one space
        return self.elementwise(n, tagged, out)

    def module_rule(self, n: fx.Node, mod: nn.Module, tagged, out):
        name = n.target
        if not tagged and isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and n.args \
                and isinstance(n.args[0], fx.Node) and n.args[0].meta.get("wl_shape"):
            return self.constant_layer(n, mod, n.args[0], out)
        if not tagged:
            return None
        node, t = tagged[0]
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            return self.layer(n, mod, node, t, out)
        if isinstance(mod, ops.NORM_MODULES):
            self.carry_check(n, tagged, out)
            space = self.find(t.space)
            c = self.size[space]
            if t.repeat != 1 or not ops.equivariant(mod, c, out.dim(), t.last):
                self.fix(space, f"{type(mod).__name__} {name} mixes channels")
            for pname, tensor in list(mod.named_parameters(recurse=False)) + list(
                    mod.named_buffers(recurse=False)):
                if tensor.dim() == 1 and tensor.numel() == c:
                    self.entry(f"{name}.{pname}", 0, space, n)
            self.norms.append((space, name))
            return t
        if isinstance(mod, ops.ACT_MODULES):
            self.carry_check(n, tagged, out)
            if isinstance(mod, nn.PReLU) and mod.weight.numel() > 1:
                self.entry(f"{name}.weight", 0, t.space, n)
            if t.repeat == 1:
                self.points.append((t.space, n))
            return t
        if isinstance(mod, ops.CARRY_MODULES):
            self.carry_check(n, tagged, out)
            return t
        if isinstance(mod, (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
                            nn.modules.padding._ReplicationPadNd)) and not t.last \
                and len(mod.padding) // 2 <= out.dim() - 2:  # spatial padding (stem.pad)
            self.carry_check(n, tagged, out)
            return t
        if isinstance(mod, nn.Flatten):
            return self.reshape(n, (node, t), out)
        raise WeightlabError(f"cannot trace the feature spaces: unsupported module {name} "
                             f"({type(mod).__name__}); define weightlab_feature_spec(self)")

    def constant_layer(self, n: fx.Node, mod: nn.Module, node: fx.Node, out):
        """A conv or linear layer whose input no channel space reaches: a tensor computed
        from sizes, constants or parameters (EdgeNeXt's Fourier position encoding, a conv
        over a sin/cos grid of the positions). Its input channels are a fixed space (nothing
        to move them with); its output y = W·c + b opens a space like any layer's: permuting
        W's rows and b permutes y's channels, so y may be added to features of a free space
        (the entries then move with that space)."""
        x = node.meta["wl_shape"]
        conv = isinstance(mod, nn.modules.conv._ConvNd)
        if len(x) < 2:
            return None
        last = not conv and len(x) > 2
        s_in = self.new(x[1] if conv else x[-1])
        self.fix(s_in, f"a constant read by {n.target}")
        return self.layer(n, mod, node, _Tag(s_in, 1, last), out)

    def layer(self, n: fx.Node, mod: nn.Module, node: fx.Node, t: _Tag, out,
              name: str | None = None):
        name = name or n.target
        conv = isinstance(mod, nn.modules.conv._ConvNd)
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            raise WeightlabError(f"unsupported module {name} (transposed convolution)")
        if not conv and len(node.meta["wl_shape"]) > 2 and not t.last \
                and not self.is_fixed(t.space) and t.repeat == 1:
            # a linear over the last axis of (N, C, T) features: it mixes tokens (MLP-Mixer),
            # each channel separately, and keeps the channels on axis 1
            return t
        if not conv and len(node.meta["wl_shape"]) > 2 and not t.last \
                and self.is_fixed(t.space):
            # fixed channels read along the last axis (an input of tokens (N, L, C)): a fixed
            # space of the linear's input features there
            t = _Tag(self.new(mod.in_features), 1, True)
            self.fix(t.space, f"input of {name} along the last axis")
        if (conv and (t.repeat != 1 or t.last)) or (
                not conv and len(node.meta["wl_shape"]) != 2 and not t.last):
            raise WeightlabError(f"{name} ({type(mod).__name__}) applied to an input of shape "
                                 f"{list(node.meta['wl_shape'])}; expected (N, C, …) for a "
                                 f"conv or (N, …, features) for a linear layer")
        w, b = f"{name}.weight", f"{name}.bias" if mod.bias is not None else None
        groups = getattr(mod, "groups", 1)
        if groups > 1 and groups == mod.in_channels == mod.out_channels:
            s_out = t.space  # depthwise: output channel c is computed from input channel c
        else:
            s_out = self.new(out.shape[-1] if not conv else out.shape[1])
            if groups > 1:  # channels may move only within groups: keep both sides fixed
                self.fix(t.space, f"grouped conv {name}")
                self.fix(s_out, f"grouped conv {name}")
            else:
                self.entry(w, 1, t.space, n, t.repeat)
            self.fallback.append((t.space, node))
        self.entry(w, 0, s_out, n)
        if b is not None:
            self.entry(b, 0, s_out, n)
        self.producers.append((s_out, name))
        self.layers.append((Layer(name, "conv" if conv else "linear", w, b, -1, -1, t.repeat,
                                  tuple(node.meta["wl_shape"][1:]), tuple(out.shape[1:])),
                            t.space, s_out))
        # a linear layer on channels-last features (N, …, C) keeps them channels-last
        return _Tag(s_out, 1, not conv and out.dim() > 2)

    def run(self, x):  # record every value's shape for the rules
        for n in self.module.graph.nodes:
            n.meta["wl_shape"] = None
        return super().run(x)

    def fetch_args_kwargs_from_env(self, n):
        args, kwargs = super().fetch_args_kwargs_from_env(n)
        for a in ops.flat_nodes((n.args, n.kwargs)):
            v = self.env.get(a)
            a.meta["wl_shape"] = tuple(v.shape) if isinstance(v, torch.Tensor) else None
        return args, kwargs

    def finish(self, fx_graph: fx.Graph) -> FeatureGraph:
        for s in list(self.packed):  # a concatenated bias never split into parts: keep it
            self.fix(s, "its bias is concatenated from several parameters")
        rigid = {self.find(s): dh for s, dh in self.rigid.items()}
        for r, dh in rigid.items():  # (a space's heads are its units)
            heads_of = max((g for s, g in self.groups.items() if self.find(s) == r), default=1)
            if heads_of != self.size[r] // dh:
                self.fix(r, "its channels may not move within heads")
        # spaces sharing one head permutation: components of the ties (two for an attention,
        # more where a separate query meets a head-first block); a fixed one fixes them all
        comp: dict[int, list[int]] = {}
        link = {}
        for a, b in self.ties:
            fa, fb = self.find(a), self.find(b)
            ra, rb = _root(link, fa), _root(link, fb)
            if ra != rb:
                link[rb] = ra
        for a, b in self.ties:
            for f in (self.find(a), self.find(b)):
                members = comp.setdefault(_root(link, f), [])
                if f not in members:
                    members.append(f)
        for members in comp.values():
            if any(f in self.fixed for f in members):
                for f in members:
                    self.fix(f, "tied to a fixed head space")
        roots: dict[int, int] = {}  # raw root → compact id, in order of first appearance

        for s in range(len(self.parent)):
            if self.find(s) not in self.dead:
                roots.setdefault(self.find(s), len(roots))
        spaces = {i: Space(i, self.size[r], fixed=r in self.fixed, reason=self.fixed.get(r, ""))
                  for r, i in roots.items()}
        for s, g in self.groups.items():
            sp = spaces[roots[self.find(s)]]
            sp.groups = max(sp.groups, g)
        for members in comp.values():  # a cycle: each names the next (units() walks it)
            ids = [roots[f] for f in members if f in roots]
            for i, sid in enumerate(ids):
                spaces[sid].tie = ids[(i + 1) % len(ids)] if len(ids) > 1 else None
        for r, dh in rigid.items():
            # heads move as whole blocks, channels stay in place within them (RoPE): a space
            # of one unit per head, each unit dh consecutive channels of every axis
            sp = spaces[roots[r]]
            if not sp.fixed:
                sp.size //= dh
        for (key, axis, offset, per_group), (s, rep) in self.entries.items():
            r = self.find(s)
            if r in rigid and not spaces[roots[r]].fixed and not per_group:
                rep *= rigid[r]
            spaces[roots[r]].entries.append(Entry(key, axis, rep, offset, per_group))
        def leaf_ids(s: int) -> list[int]:  # a composite's leaves; a plain space itself
            return [roots[leaf] for _, _, leaf in split.leaves(self, s) if leaf in roots]

        for s, name in self.producers:  # (a stream cut into parts: each part's producer)
            for i in leaf_ids(s):
                _add(spaces[i].producers, name)
        for s, name in self.norms:
            for i in leaf_ids(s):
                _add(spaces[i].norms, name)
        active: set[int] = set()  # spaces with an activation's feature point
        # a part is read once within a concatenation, where first seen: DenseNet's layer
        # outputs are in every later concatenation of their block (hundreds of reads)
        as_part: set[int] = set()

        def read(i: int, point: str) -> bool:  # False: a part already read elsewhere
            if "parts:" in point:
                if i in as_part:
                    return False
                as_part.add(i)
            _add(spaces[i].feature_points, point)
            return True

        for s, node in self.points:  # (channels made of parts: each part's channels)
            for i, point in self.points_of(s, node, roots):
                if read(i, point):
                    active.add(i)
        for s, name in self.named_points:  # (a rigid space's points read heads × dh
            if self.find(s) in roots:  # channels: matching.features reads them per head)
                _add(spaces[roots[self.find(s)]].feature_points, name)
        for s, node in self.fallback:  # no activation: read the value a layer consumes
            t = self.tag_of(node)
            if t is None or t.repeat != 1 or t.tiles != 1:
                continue
            for i, point in self.points_of(s, node, roots):
                if i not in active:
                    read(i, point)
        layers, seen = [], set()
        for layer, s_in, s_out in self.layers:
            if layer.name not in seen:
                seen.add(layer.name)
                # (channels made of parts: the first part's space)
                layer.in_space, layer.out_space = leaf_ids(s_in)[0], leaf_ids(s_out)[0]
                layers.append(layer)
        layouts = {}
        for node, t in self.tags.items():  # channels-first values, channel by channel
            if not isinstance(t, _Tag) or t.last or t.repeat != 1 or t.tiles != 1:
                continue
            parts = [(off, size, roots.get(leaf)) for off, size, leaf in split.leaves(self,
                                                                                   t.space)]
            if all(i is not None and spaces[i].size == size for _, size, i in parts):
                layouts[node.name] = parts  # (not a rigid space: its units are head blocks)
        return FeatureGraph(spaces, list(range(len(roots))), layers, fx_graph, layouts)

    def points_of(self, s: int, node: fx.Node, roots: dict[int, int]
                  ) -> list[tuple[int, str]]:
        """(space id, feature point) of a value of space ``s``: its point name, or for
        channels made of parts one point per part space, ``NAME@parts:O1,O2,…:SIZE`` (its
        channels at each offset, the occurrences read as more samples; ``lastparts`` for a
        channels-last value)."""
        r = self.find(s)
        if r in roots:
            return [(roots[r], self.point_name(node))]
        if r not in self.split:
            return []
        t = self.tag_of(node)
        base = self.point_name(node).removesuffix("@last")
        kind = "lastparts" if t is not None and t.last else "parts"
        at: dict[int, tuple[int, list[int]]] = {}
        for off, size, leaf in split.leaves(self, r):
            at.setdefault(leaf, (size, []))[1].append(off)
        return [(roots[leaf], f"{base}@{kind}:{','.join(map(str, offs))}:{size}")
                for leaf, (size, offs) in at.items() if leaf in roots]

    def point_name(self, node: fx.Node) -> str:
        """A module called once, else the fx node; ``@last`` when the value is channels-last
        (the reader moves its channels to axis 1)."""
        t = self.tag_of(node)
        last = "@last" if t is not None and t.last else ""
        if node.op == "call_module" and self.calls.get(node.target) == 1:
            return node.target + last
        return node.name + last


def _root(link: dict[int, int], x: int) -> int:
    while x in link:
        x = link[x]
    return x


def _add(items: list[str], name: str) -> None:
    if name not in items:
        items.append(name)
