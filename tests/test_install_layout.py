"""The installed package wins over a clone named ``weightlab`` in the working directory (a
notebook opened in the parent of ``~/weightlab``): the clone's root has no ``__init__.py``, so
Python would take it for a namespace package ``weightlab`` unless a regular package is on
sys.path (scripts/src_paths.py, run by ``make setup``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from weightlab import testing

SCRIPT = """
import weightlab, weightlab.plugins
from weightlab.errors import UsageError
print(weightlab.__file__)
print(weightlab.plugins.__file__)
"""


def _clone(tmp_path: Path) -> Path:
    """A copy of the repository's top level (core/, cli/, plugins/ …) named ``weightlab``."""
    clone = tmp_path / "weightlab"
    for name in ("core", "cli", "plugins", "docs"):
        shutil.copytree(testing.REPO / name, clone / name,
                        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "tests"))
    shutil.copy(testing.REPO / "pyproject.toml", clone)
    return clone


def test_parent_of_a_clone_named_weightlab_imports_the_installed_package(tmp_path):
    _clone(tmp_path)
    installed = Path(__import__("weightlab").__file__).resolve()
    (tmp_path / "t.py").write_text(SCRIPT)
    for argv in ([sys.executable, "t.py"], [sys.executable, "-c", SCRIPT]):
        out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (f"{argv[1]} run in the parent of a clone named weightlab "
                                     f"failed (re-run `make setup`):\n{out.stderr[-800:]}")
        init, plugins_module = (Path(line).resolve() for line in out.stdout.split())
        assert init == installed, (f"imported {init} instead of the installed {installed}: the "
                                   f"clone's root shadows it (re-run `make setup`)")
        assert plugins_module == installed.parent / "plugins.py"
