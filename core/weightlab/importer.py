"""Import foreign checkpoints: plain torch state dicts, loaded with ``weights_only=True``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from weightlab import checkpoint as ckpt_io
from weightlab.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal is the user's file
        raise CheckpointError(f"{path}: not a plain torch state dict that loads with "
                              f"weights_only=True ({_reason(e)})") from None
    for _ in range(2):
        # {"state_dict": {...}, "epoch": 160, "best_acc": tensor(...)}: a wrapper key holding a
        # mapping wins (a real state dict maps names to tensors, never to mappings)
        inner = next((obj[k] for k in _WRAPPER_KEYS
                      if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    sd = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()
          if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not sd:
        raise CheckpointError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return sd


def _reason(e: Exception) -> str:
    """torch's refusal in one line: its WeightsUnpickler sentence, without colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    line = found.group(1) if found else (text.strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {line.split('. ')[0][:200]}"


def dataset_info(name: str, registry=None, params: dict | None = None) -> dict[str, Any]:
    from weightlab import plugins

    reg = registry or plugins.registry()
    d = reg.create("datasets", name, params)
    return {"name": d.name, "params": d.params_dict(), "num_classes": d.num_classes,
            "input_shape": list(d.input_shape), "mean": list(d.mean), "std": list(d.std),
            "classes": d.class_names()}


def import_state_dict(path: Path, model: str, data: str, dest: Path, *,
                      num_classes: int | None = None, model_params: dict | None = None,
                      data_params: dict | None = None, force: bool = False, registry=None
                      ) -> ckpt_io.Checkpoint:
    from weightlab import plugins

    reg = registry or plugins.registry()
    ckpt_io.check_writable(dest, force)
    sd = read_state_dict(Path(path))
    dinfo = dataset_info(data, reg, data_params)
    comp = reg.create("models", model, model_params)
    nc = num_classes or dinfo["num_classes"]
    info = ckpt_io.model_info(model, comp.params_dict(), dinfo["input_shape"], nc)
    sd, layout = match_keys(sd, comp, tuple(dinfo["input_shape"]), nc, path, model)
    ck = ckpt_io.Checkpoint(model=info, state=sd, data=dinfo,
                            provenance={"kind": "imported", "source": str(path),
                                        **({"layout": layout} if layout else {})})
    net = ck.build(reg)  # validates names and shapes against the model
    ck.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    ckpt_io.save(ck, dest, force=force)
    return ck


def match_keys(sd: dict[str, torch.Tensor], comp: Any, input_shape: tuple[int, ...],
               num_classes: int, path: Path, model: str
               ) -> tuple[dict[str, torch.Tensor], str | None]:
    """The file's tensors under the model's key names: as they are, or renamed by one of the
    family's ``foreign_layouts`` (e.g. the seed code's ``segments.0.…``/``norm1``/``fc``). A
    file no layout fits is one error line naming the first mismatch and its closest key."""
    from weightlab import statekeys

    expected = list(comp.build(input_shape, num_classes).state_dict())
    layouts = getattr(comp, "foreign_layouts", {}) or {}
    found = statekeys.adopt(sd, expected, layouts)
    if found is not None:
        layout, renamed = found
        return renamed, layout
    layout, keys = statekeys.closest_layout(sd, expected, layouts)
    how = f" (read with the {layout!r} layout)" if layout else ""
    raise CheckpointError(f"{path}: keys do not fit model {model}{how}: "
                          f"{statekeys.mismatch_line(keys, expected)}")
