"""A plugin author's path, as the tutorial and ``weightlab plugins new`` tell it, in a fresh
environment holding weightlab alone (core and CLI, no plugin): the core prunes with its
built-in pruners, and the template's printed next step (install with the test extra, run
pytest, show the component) works as written.

Lean on purpose: the venv borrows the project venv's third-party packages (torch, pytest …)
through a directory of links that leaves out every weightlab distribution, and packages are
installed with --no-deps --no-build-isolation (no index needed)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = ["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WEIGHTLAB_DISABLE_PLUGINS", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(COLUMNS="100", NO_COLOR="1", TERM="dumb", **extra)
    return env


def _fresh_venv(root: Path) -> Path:
    """A venv whose only weightlab is the core distribution installed from a copy of the repo."""
    deps = root / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_path("purelib"))
    for entry in site.iterdir():
        low = entry.name.lower()
        if "weightlab" in low or low.endswith(".pth") or low.startswith("__editable__"):
            continue  # no plugin, no editable finder, no path file of the project venv
        (deps / entry.name).symlink_to(entry)
    venv = root / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig."
                                     "get_path('purelib'))"], capture_output=True, text=True,
                                    check=True).stdout.strip())
    (venv_site / "borrowed.pth").write_text(f"{deps}\n")
    src = root / "weightlab-src"
    for name in ("core", "cli"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns(
            "*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md", "registry.toml"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([str(py), *PIP, str(src)], check=True, capture_output=True, env=_env())
    return venv


@pytest.mark.slow
def test_core_alone_prunes_and_the_template_next_step_works(tmp_path, digits_ckpt):
    venv = _fresh_venv(tmp_path)
    bin_ = venv / "bin"

    def run(*argv: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd, env=_env())

    wl = str(bin_ / "weightlab")
    listed = json.loads(run(wl, "plugins", "list", "--json").stdout)
    assert [p["name"] for p in listed] == ["builtin"]
    pruners = {p["name"]: p["plugin"] for p in json.loads(
        run(wl, "list", "pruners", "--json").stdout)}
    assert pruners == {"magnitude": "builtin", "global_magnitude": "builtin", "random": "builtin"}
    res = run(wl, "prune", str(digits_ckpt), "--pruner", "magnitude", "--sparsity", "0.5",
              "--param", "skip_last=true", "--out", str(tmp_path / "p.safetensors"), "--json",
              "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["sparsity"] == pytest.approx(0.5, abs=0.02)

    res = run(wl, "plugins", "new", "lamp", "--kind", "pruner", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    next_step = re.search(r"^next: (.*)$", res.stderr, re.M).group(1)
    steps = [shlex.split(s) for s in next_step.split(" && ")]
    assert [s[0] for s in steps] == ["pip", "pytest", "weightlab"]
    pip, pytest_, show = steps
    assert pip[1:3] == ["install", "-e"] and pip[3].endswith("[test]")  # pytest comes along
    # as written, with the flags that keep the install offline (dependencies are borrowed)
    res = run(str(bin_ / "python"), *PIP, *pip[2:])
    assert res.returncode == 0, res.stderr
    res = run(str(bin_ / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_[1:])
    assert res.returncode == 0 and " passed" in res.stdout, res.stdout[-2000:]
    res = run(str(bin_ / "weightlab"), *show[1:], "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["plugin"] == "lamp"
