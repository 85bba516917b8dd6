"""What the operations share: resolving components given by name or as instances, loading
checkpoints and the data they were trained on, tracing the feature graph, provenance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightlab.errors import UsageError

# a checkpoint argument: a path, or an already loaded weightlab.checkpoint.Checkpoint
CheckpointLike = Any


def component(kind: str, value: Any, params: dict[str, Any] | Sequence[str] | None = None):
    """A component from a registry name (``"weight"``, ``"zipit:cca"``) with a parameter dict
    (or ``key=value`` strings), or an instance passed through as it is; None for None/"none"."""
    from weightlab.components import BASES

    if value is None or (isinstance(value, str) and value in ("", "none")):
        return None
    if isinstance(value, BASES[kind]):
        if params:
            raise UsageError(f"{kind[:-1]}_param: parameters go with a component name, not "
                             f"with an instance of {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise UsageError(f"{kind[:-1]}={value!r}: expected a registered name or a "
                         f"{BASES[kind].__name__} instance")
    from weightlab import plugins

    return plugins.registry().create(kind, value, param_dict(params))


def param_dict(params: dict[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    from weightlab.params import parse_assignments

    if params is None:
        return {}
    if isinstance(params, dict):
        return dict(params)
    return parse_assignments(list(params))


def describe(comp: Any) -> dict[str, Any] | None:
    """A component as provenance: its name and parameters."""
    return None if comp is None else {"name": comp.name, "params": comp.params_dict()}


@dataclass
class Loaded:
    """Checkpoints loaded for one operation, with their models on one device."""

    paths: list[str]
    models: list[Any]
    ckpts: list[Any]
    device: str


def load_checkpoints(items: Sequence[CheckpointLike], device: str | None,
                     check: bool = True) -> Loaded:
    """Load (or take) checkpoints and build their models in eval mode on ``device``; with
    ``check``, refuse architectures that differ (one line naming the first differing tensor)
    and warn when a model is given twice (a self-merge is a no-op)."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import device as devmod
    from weightlab.merging import check_compatible

    dev = devmod.resolve(device)
    models, ckpts, names = [], [], []
    for item in items:
        if isinstance(item, ckpt_io.Checkpoint):
            ck, net = item, item.build(device=dev)
            names.append(str(item.path or f"<checkpoint {len(names)}>"))
        else:
            net, ck = ckpt_io.load_model(Path(item), dev)
            names.append(str(item))
        models.append(net.eval())
        ckpts.append(ck)
    if check and len(models) > 1:
        check_compatible([m.state_dict() for m in models], names)
        _warn_duplicates(ckpts, names)
    return Loaded(names, models, ckpts, dev)


def _warn_duplicates(ckpts: Sequence[Any], names: Sequence[str]) -> None:
    import warnings

    seen: dict[str, str] = {}
    for ck, name in zip(ckpts, names):
        digest = ck.digest()
        if digest in seen:
            warnings.warn(f"{name} holds the same weights as {seen[digest]}: merging a model "
                          f"with itself changes nothing", UserWarning, stacklevel=3)
        seen.setdefault(digest, name)


def load_bundle(ckpt: Any, data: str | None, data_dir: Any, device: str, heldout: int = 0):
    """The dataset a checkpoint names (or ``data``), with its normalization parameters."""
    from weightlab.data.bundle import load_data

    name = data or ckpt.data.get("name")
    if not name:
        raise UsageError(f"{ckpt.path}: the checkpoint names no dataset; pass data=NAME")
    params = ckpt.data.get("params") if not data or data == ckpt.data.get("name") else None
    return load_data(name, data_dir=data_dir, device=device, params=params, heldout=heldout)


def require_data(comp: Any, field: str, bundle: Any) -> None:
    if comp is not None and comp.needs_data and bundle is None:
        raise UsageError(f"{field}={comp.name!r} needs calibration data: pass data=NAME (the "
                         f"checkpoints name none)")


def example_input(ckpt: Any, device: str, batch: int = 2):
    """An all-zero batch of the checkpoint's input shape (for tracing and FLOP counting)."""
    import torch

    return torch.zeros(batch, *ckpt.model["input_shape"], device=device)


def trace_graph(model: Any, ckpt: Any, device: str):
    from weightlab.graph import trace

    return trace(model, example_input(ckpt, device))


def check_writable(path: Any, force: bool) -> None:
    from weightlab.atomic import check_writable as check

    if path is not None:
        check(Path(path), force)


