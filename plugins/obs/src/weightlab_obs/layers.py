"""A conv or linear layer as the matrices OBS works on, and its Hessian from calibration data.

Linear: W is (out × in) and the input rows X are the inputs x ∈ ℝ^in (any leading dims
flattened). Conv (1d/2d, any stride, dilation, padding mode, groups): im2col — every output
position's receptive field is one input row; per group g, W_g is (out/g × k·C/g) with the
columns in (kernel position, input channel) order, so that N:M groups of M consecutive columns
run along input channels at one kernel position, as sparse tensor cores (and NVIDIA's ASP)
group a conv's weights.

H = 2 XᵀX / n over the n input rows (OBC eq. 2; samples × output positions for a conv).

Attention's input projections (``nn.MultiheadAttention``'s bare parameters, no Linear module:
:class:`Projection`): the packed ``in_proj_weight`` (3E × E) is three groups of E rows, Q, K
and V, each a linear map of its own input (query, key, value), so each group has its own H; a
separate ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` is one group on its input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from weightlab.errors import UsageError


class Projection:
    """A projection of ``nn.MultiheadAttention`` as the layer OBS prunes: ``weight`` the
    parameter, ``attention`` the module whose call carries its input; ``part`` "in" (packed Q,
    K, V rows), "q", "k", "v" (separate projections) or "out" (``out_proj``: a Linear the
    attention never calls — its weight is used functionally — so its input, the heads' outputs
    side by side, is recomputed from the attention's call with ``out_proj`` set to the
    identity)."""

    PARTS = {"q": 0, "k": 1, "v": 2}

    def __init__(self, attention: nn.MultiheadAttention, part: str):
        self.attention, self.part = attention, part
        self.weight = attention.out_proj.weight if part == "out" else \
            getattr(attention, f"{part}_proj_weight")
        self._inside = False

    @classmethod
    def of(cls, modules: dict[str, nn.Module], name: str) -> Projection | None:
        """The projection a parameter name denotes (``….in_proj_weight``,
        ``….out_proj.weight`` of an attention), else None."""
        owner, _, leaf = name.rpartition(".")
        if leaf == "weight" and owner.rpartition(".")[2] == "out_proj":
            parent = modules.get(owner.rpartition(".")[0])
            return cls(parent, "out") if isinstance(parent, nn.MultiheadAttention) else None
        part = leaf.removesuffix("_proj_weight")
        mod = modules.get(owner)
        if isinstance(mod, nn.MultiheadAttention) and leaf.endswith("_proj_weight") \
                and part in ("in", *cls.PARTS):
            return cls(mod, part)
        return None

    def inputs(self, args: tuple, kwargs: dict) -> tuple[torch.Tensor, ...] | None:
        """(query, key, value) for the packed weight, the one input of a separate part, the
        heads' outputs for ``out`` (None inside that recomputation's own call)."""
        if self.part == "out":
            return None if self._inside else (self._heads_output(args, kwargs),)
        names = ("query", "key", "value")
        qkv = tuple(args[i] if i < len(args) else kwargs[n] for i, n in enumerate(names))
        return qkv if self.part == "in" else (qkv[self.PARTS[self.part]],)

    @torch.no_grad()
    def _heads_output(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The attention's own call with y = z·Iᵀ + 0 in place of out_proj: y = z, the input
        out_proj would receive (masks, batch_first and head layout as the call has them)."""
        out = self.attention.out_proj
        w, b = out.weight.data, None if out.bias is None else out.bias.data
        out.weight.data = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
        if b is not None:
            out.bias.data = torch.zeros_like(b)
        self._inside = True
        try:
            return self.attention(*args, **kwargs)[0]
        finally:
            self._inside = False
            out.weight.data = w
            if b is not None:
                out.bias.data = b


def register_input_hook(module, fn):
    """Call ``fn(x)`` with the input a layer receives, before it runs: a tensor, or for a
    :class:`Projection` the tuple of its inputs (read from the attention's call)."""
    if isinstance(module, Projection):
        def pre(_m, args, kwargs):
            if (x := module.inputs(args, kwargs)) is not None:
                fn(x)
        return module.attention.register_forward_pre_hook(pre, with_kwargs=True)
    return module.register_forward_pre_hook(lambda _m, inp: fn(inp[0]))


def check_supported(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv3d):
        raise UsageError(f"obs: {name} is a Conv3d, which obs does not prune (im2col is "
                         f"implemented for Conv1d/Conv2d); leave it out with exclude=")


def groups_of(module: nn.Module) -> int:
    if isinstance(module, Projection):
        return 3 if module.part == "in" else 1
    return module.groups if isinstance(module, (nn.Conv1d, nn.Conv2d)) else 1


def weight_matrices(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (the weight or its mask, in the weight's shape) as (groups, out/g, columns)."""
    g = groups_of(module)
    if tensor.dim() == 2:
        return tensor.reshape(g, tensor.shape[0] // g, tensor.shape[1])  # packed Q, K, V
    # (out, C/g, *k) → (out, *k, C/g): kernel position major, input channel minor
    t = tensor.movedim(1, -1)
    return t.reshape(g, tensor.shape[0] // g, -1)


def from_matrices(module: nn.Module, mats: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`weight_matrices`."""
    if len(shape) == 2:
        return mats.reshape(shape)
    moved = (shape[0], *shape[2:], shape[1])
    return mats.reshape(moved).movedim(-1, 1).contiguous()


def input_rows(module: nn.Module, x) -> torch.Tensor:
    """The layer input as rows (groups, n, columns), columns matching :func:`weight_matrices`
    (a :class:`Projection`'s input: the tuple :meth:`Projection.inputs` gives, one per group,
    tokens × batch rows each)."""
    if isinstance(module, Projection):
        rows = [t.reshape(-1, t.shape[-1]) for t in x]
        if len({r.shape for r in rows}) > 1:
            raise UsageError(f"obs: the {module.part}_proj_weight's query, key and value "
                             f"inputs differ in length or width ({[tuple(r.shape) for r in rows]}:"
                             f" cross-attention); leave it out with exclude=")
        return torch.stack(rows)
    if isinstance(module, nn.Linear):
        return x.reshape(1, -1, x.shape[-1])
    conv1d = isinstance(module, nn.Conv1d)
    pad = module._reversed_padding_repeated_twice  # what the module's own forward pads with
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    k, dil, stride = module.kernel_size, module.dilation, module.stride
    if conv1d:
        x, k, dil, stride = x.unsqueeze(2), (1, *k), (1, *dil), (1, *stride)
    cols = F.unfold(x, k, dilation=dil, stride=stride)  # (N, C·kh·kw, L), C major
    g = module.groups
    kk = k[0] * k[1]
    cols = cols.view(x.shape[0], g, x.shape[1] // g, kk, -1)
    # → (g, N, L, kk, C/g): one row per output position, kernel position major
    return cols.permute(1, 0, 4, 3, 2).reshape(g, -1, kk * (x.shape[1] // g))


class _Stop(Exception):
    """Raised by the collecting hook to end a forward pass once the layer's input is seen."""


def execution_order(model: nn.Module, modules: dict[str, nn.Module], batch: torch.Tensor
                    ) -> tuple[list[str], dict[str, int]]:
    """The names of ``modules`` in the order a forward pass first calls them, and how often
    each is called (one probe batch). Layers never called come last, with count 0."""
    order: list[str] = []
    calls = dict.fromkeys(modules, 0)

    def hook(name):
        def fn(_x):
            if calls[name] == 0:
                order.append(name)
            calls[name] += 1
        return fn

    handles = [register_input_hook(m, hook(n)) for n, m in modules.items()]
    try:
        with torch.no_grad(), eval_mode(model):
            model(batch)
    finally:
        for h in handles:
            h.remove()
    return order + [n for n in modules if calls[n] == 0], calls


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def batches(data, samples: int, device, dtype) -> Iterator[torch.Tensor]:
    """The calibration images, at most ``samples`` of them, on the model's device and dtype."""
    seen = 0
    for x, *_ in data:
        if seen >= samples:
            break
        x = x[: samples - seen].to(device, dtype)
        seen += x.shape[0]
        yield x


def hessian(model: nn.Module, module: nn.Module, data, samples: int, dtype: torch.dtype,
            stop_early: bool = True) -> tuple[torch.Tensor, int, int]:
    """H = 2XᵀX/n per group, (groups, columns, columns) in ``dtype``, from the inputs ``module``
    receives when ``model`` (eval mode, as it is now) runs on up to ``samples`` calibration
    images; also n (input rows) and the images used. ``stop_early``: end each forward pass at
    the layer (right when it is called once per pass)."""
    dev = module.weight.device
    acc: list[torch.Tensor] = []
    rows = [0]

    def fn(inp):
        x = input_rows(module, inp).detach().to(dtype)
        if not acc:
            acc.append(torch.zeros(x.shape[0], x.shape[2], x.shape[2], dtype=dtype, device=dev))
        acc[0].baddbmm_(x.transpose(1, 2), x)  # Σ x xᵀ
        rows[0] += x.shape[1]
        if stop_early:
            raise _Stop

    handle = register_input_hook(module, fn)
    images = 0
    try:
        with torch.no_grad(), eval_mode(model):
            for x in batches(data, samples, dev, module.weight.dtype):
                images += x.shape[0]
                try:
                    model(x)
                except _Stop:
                    pass
    finally:
        handle.remove()
    if not acc or rows[0] == 0:
        raise UsageError("obs: the calibration data yielded no input for a pruned layer "
                         "(is it used in the forward pass?)")
    return acc[0] * (2.0 / rows[0]), rows[0], images
