"""Shared fixtures: the in-process CLI, a fresh plugin state, fake installed plugin packages."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest


def pytest_configure(config):
    """One torch thread: on a shared 2-core machine, intra-op threads spin against other
    processes (measured: a small MLP step took 121 ms with 2 threads, 5.7 ms with 1)."""
    import torch

    torch.set_num_threads(int(os.environ.get("WEIGHTLAB_TEST_THREADS", "1")))


@pytest.fixture
def fresh_plugins():
    """Forget the process-wide plugin state before and after the test (env, sys.path changes)."""
    from weightlab import plugins

    old = plugins._STATE
    plugins.set_state(None)
    yield
    plugins.set_state(old)


@pytest.fixture
def cli(capsys):
    """The CLI run in-process (weightlab_cli.testing.CLI)."""
    from weightlab_cli.testing import CLI

    return CLI(capsys)


class FakeSite:
    """A directory on sys.path holding fake installed distributions (``*.dist-info`` with an
    ``entry_points.txt``) and their modules, found by importlib.metadata like real ones."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.modules: list[str] = []
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.syspath_prepend(str(root))

    def add(self, dist: str, entry_points: dict[str, str], modules: dict[str, str] | None = None,
            version: str = "0.1.0", root: Path | None = None) -> None:
        """``entry_points``: entry-point name → module; ``modules``: module → source."""
        where = root or self.root
        info = where / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\n"
                                       f"Version: {version}\n")
        eps = "".join(f"{name} = {module}\n" for name, module in entry_points.items())
        (info / "entry_points.txt").write_text(f"[weightlab]\n{eps}")
        for module, source in (modules or {}).items():
            (where / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)


@pytest.fixture
def fake_site(tmp_path, monkeypatch, fresh_plugins):
    import importlib

    site = FakeSite(tmp_path / "site", monkeypatch)
    yield site
    for m in site.modules:
        sys.modules.pop(m, None)
    importlib.invalidate_caches()


@pytest.fixture
def digits_ckpt(tmp_path):
    """A random 8×8-digits MLP checkpoint (fast; for error paths and pruner output)."""
    from weightlab import checkpoint, testing

    net = testing.tiny_model("mlp", width=32)
    info = checkpoint.model_info("mlp", {"width": 32}, (1, 8, 8), 10)
    return checkpoint.save(checkpoint.from_model(net, info, data={"name": "digits"}),
                           tmp_path / "digits.safetensors")
