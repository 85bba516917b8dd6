"""A checkpoint's JSON header without torch: a safetensors file starts with an 8-byte
little-endian length n and n bytes of JSON whose ``__metadata__`` holds weightlab's header under
``HEADER_KEY``. Kept apart from :mod:`weightlab.checkpoint` (which imports torch, 1.5 s) so that
a recipe's driver can key its cache on checkpoint digests without loading torch, leaving the
CPU to the workers (``weightlab run --executor ray``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from weightlab.errors import CheckpointError

HEADER_KEY = "weightlab"


def _directory_message(path: Path, shown: int = 8) -> str:
    """A run directory given where a checkpoint file is expected: name the checkpoints in it."""
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if not found:
        found = sorted(str(p.relative_to(path)) for p in path.glob("*/*.safetensors"))
    if not found:
        return f"{path} is a directory with no checkpoint (*.safetensors) in it"
    listed = ", ".join(found[:shown]) + (f", … ({len(found)} in all)" if len(found) > shown
                                         else "")
    return f"{path} is a directory, not a checkpoint; its checkpoints: {listed}"


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header alone (cheap: no tensor is read)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(_directory_message(path))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000 or n > path.stat().st_size - 8:
                raise ValueError("bad header length")
            meta = json.loads(f.read(n)).get("__metadata__", {})
        return json.loads(meta[HEADER_KEY])
    except (ValueError, KeyError, json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a weightlab checkpoint (safetensors header missing "
                              f"or damaged); convert plain torch files with 'weightlab import'"
                              ) from None
