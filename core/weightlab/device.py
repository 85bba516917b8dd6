"""Device selection: ``--device`` or CUDA when present."""

from __future__ import annotations


def resolve(device: str | None = None) -> str:
    import torch

    from weightlab.errors import UsageError

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device={device!r}: CUDA is not available on this machine")
    return device
