"""Checkpoints: safetensors files with a JSON header under the metadata key ``weightlab``.

Header: format version, model (name, params, input_shape, num_classes), data (name,
normalization, classes), train config, metrics, provenance, sparsity, and a SHA-256 of the
tensor payload so that corruption is caught on load. Masks of sparse models are stored as bool
tensors named ``__mask__.<parameter>`` and re-applied on load. No pickle is ever loaded here.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from weightlab.atomic import atomic_path, check_writable  # noqa: F401 (re-exported)
from weightlab.checkpoint_header import (  # noqa: F401 (re-exported: torch-free)
    HEADER_KEY,
    read_header,
)
from weightlab.errors import CheckpointError

FORMAT = 1
MASK_PREFIX = "__mask__."


@dataclass
class Checkpoint:
    """A model's tensors and everything needed to rebuild and describe it."""

    model: dict[str, Any]  # name, params, input_shape, num_classes
    state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None  # of the tensors as stored (set by load and save)

    def digest(self) -> str:
        """SHA-256 of the tensors (masks included), as the header stores it."""
        if self.sha256 is None:
            tensors = dict(self.state)
            tensors.update({MASK_PREFIX + k: m.bool() for k, m in self.masks.items()})
            self.sha256 = _digest(tensors)
        return self.sha256

    def header(self) -> dict[str, Any]:
        h = {"format": FORMAT, "model": self.model, "data": self.data, "train": self.train,
             "metrics": self.metrics, "provenance": self.provenance, **self.extra}
        if self.masks:
            h["sparsity"] = sparsity_report(self.masks)
        return h

    def build(self, registry=None, device: str | torch.device = "cpu") -> torch.nn.Module:
        """Rebuild the model, load the tensors and re-apply the masks. A header with a
        ``structure`` entry (a model that is not one registered architecture) is built by the
        plugin it names (:func:`build_structure`)."""
        from weightlab import plugins

        reg = registry or plugins.registry()
        m = self.model
        if self.extra.get("structure"):
            net = build_structure(self)
        else:
            comp = reg.create("models", m["name"], m.get("params"))
            net = comp.build(tuple(m["input_shape"]), int(m["num_classes"]))
        try:
            net.load_state_dict(self.state, strict=True)
        except RuntimeError as e:
            where = f"{self.path}: " if self.path else ""
            first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
            raise CheckpointError(f"{where}tensors do not fit model {m['name']}: {first}") from None
        apply_masks(net, self.masks)
        return net.to(device)


def build_structure(ckpt: Checkpoint) -> torch.nn.Module:
    """The empty module of a checkpoint whose header has ``structure = {"plugin": P,
    "builder": "module:function", …}`` (e.g. the zipit plugin's partially merged models):
    ``function(ckpt)`` from plugin P, which must be installed and loaded, and ``module`` must
    belong to P's package, so a file can never make weightlab import anything else. The
    caller loads the tensors."""
    import importlib

    from weightlab import plugins

    spec = ckpt.extra["structure"]
    where = f"{ckpt.path}: " if ckpt.path else ""
    name, builder = spec.get("plugin"), str(spec.get("builder", ""))
    info = plugins.state().plugins.get(name) if isinstance(name, str) else None
    if info is None or info.status != "ok":
        state = "is not installed" if info is None else f"is {info.status}"
        raise CheckpointError(f"{where}this model is built by plugin {name!r}, which {state}")
    module, _, func = builder.partition(":")
    package = (info.module or "").split(".")[0]
    if not func or not package or module.split(".")[0] != package:
        raise CheckpointError(f"{where}structure builder {builder!r} is not a function of "
                              f"plugin {name!r} (package {package or '?'})")
    return getattr(importlib.import_module(module), func)(ckpt)


def apply_masks(net: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    if not masks:
        return
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            if name not in params:
                raise CheckpointError(f"mask for unknown parameter {name!r}")
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


def sparsity_report(masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    per = {k: 1.0 - float(m.float().mean()) for k, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    zeros = sum(int((~m.bool()).sum()) for m in masks.values())
    return {"overall": zeros / max(total, 1), "layers": per}


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        # reshape first: a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_info(name: str, params: dict[str, Any], input_shape, num_classes: int) -> dict:
    return {"name": name, "params": params, "input_shape": list(input_shape),
            "num_classes": int(num_classes)}


def save(ckpt: Checkpoint, path: str | Path, *, force: bool = False) -> Path:
    """Write atomically; refuse to overwrite without ``force``."""
    from safetensors.torch import save_file

    path = check_writable(path, force)
    tensors = {k: v.detach().contiguous().cpu() for k, v in ckpt.state.items()}
    for k, m in ckpt.masks.items():
        tensors[MASK_PREFIX + k] = m.detach().bool().contiguous().cpu()
    header = ckpt.header()
    header.setdefault("provenance", {}).setdefault("saved_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
    header["sha256"] = _digest(tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    ckpt.path, ckpt.sha256 = path, header["sha256"]
    return path


def load(path: str | Path, *, verify: bool = True) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    header = read_header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged or truncated checkpoint ({e})") from None
    if verify and header.get("sha256") and _digest(tensors) != header["sha256"]:
        raise CheckpointError(f"{path}: tensor data does not match its checksum (corrupted file)")
    if header.get("format", 0) > FORMAT:
        raise CheckpointError(f"{path}: written by a newer weightlab (format {header['format']})")
    masks = {k[len(MASK_PREFIX):]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
    known = {"format", "model", "data", "train", "metrics", "provenance", "sparsity", "sha256"}
    if "model" not in header or "name" not in header.get("model", {}):
        raise CheckpointError(f"{path}: header has no model description")
    return Checkpoint(model=header["model"], state=state, masks=masks,
                      data=header.get("data", {}), train=header.get("train", {}),
                      metrics=header.get("metrics", {}), provenance=header.get("provenance", {}),
                      extra={k: v for k, v in header.items() if k not in known}, path=path,
                      sha256=header.get("sha256"))


def from_model(net: torch.nn.Module, model: dict[str, Any], **fields: Any) -> Checkpoint:
    return Checkpoint(model=model, state={k: v.detach().cpu().clone()
                                          for k, v in net.state_dict().items()}, **fields)


def load_model(path: str | Path, device: str | torch.device = "cpu", registry=None
               ) -> tuple[torch.nn.Module, Checkpoint]:
    ckpt = load(path)
    return ckpt.build(registry, device).eval(), ckpt
