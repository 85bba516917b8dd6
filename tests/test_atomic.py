"""Atomic writes leave the mode a plain write would: 0o666 minus the umask for a new file (so
colleagues on a shared cluster can read checkpoints), the old mode for a replaced one."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
from weightlab import atomic, checkpoint, testing


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_get_the_umask_mode(tmp_path, mask, expected):
    with umask(mask):
        atomic.write_text(tmp_path / "a.json", "{}")
        with atomic.atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    assert _mode(tmp_path / "a.json") == expected
    assert _mode(tmp_path / "b.bin") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]  # no temporaries


def test_a_checkpoint_is_readable_by_others_under_umask_022(tmp_path):
    """Before: 0o600 (mkstemp's mode survived the rename) while other outputs were 0o644."""
    net = testing.tiny_model("mlp", width=8)
    info = checkpoint.model_info("mlp", {"width": 8}, (1, 8, 8), 10)
    with umask(0o022):
        path = checkpoint.save(checkpoint.from_model(net, info, data={"name": "digits"}),
                               tmp_path / "m.safetensors")
    assert _mode(path) == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with umask(0o022):
        atomic.write_text(target, "new")
    assert target.read_text() == "new" and _mode(target) == 0o640
