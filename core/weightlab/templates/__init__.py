"""The ``weightlab plugins new`` template: an installable plugin package for one component kind.

Files under ``plugin/`` are package data; ``{{key}}`` placeholders are replaced by plain text
substitution (nothing is evaluated). ``plugin/kinds/<kind>.py.tmpl`` is the component skeleton
and ``plugin/kinds/test_<kind>.py.tmpl`` its tests.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from weightlab.errors import UsageError

KINDS = {"matcher": "matchers", "normalizer": "normalizers", "pruner": "pruners",
         "ensemble": "ensembles", "model": "models", "dataset": "datasets"}
NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")


def names(name: str, kind: str) -> dict[str, str]:
    """Every spelling the template needs, e.g. lamp/pruner → weightlab-lamp, weightlab_lamp,
    LampPruner, weightlab_register_pruners."""
    if not NAME.fullmatch(name):
        raise UsageError(f"plugin name {name!r}: expected lower-case letters and digits, "
                         f"words joined by - or _ (e.g. lamp, my-pruner)")
    if kind not in KINDS:
        raise UsageError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    snake = name.replace("-", "_")
    camel = "".join(p.capitalize() for p in snake.split("_"))
    return {"name": name, "component": snake, "dist": f"weightlab-{name}",
            "module": f"weightlab_{snake}", "Class": camel + kind.capitalize(),
            "kind": KINDS[kind], "kind_singular": kind, "file": kind,
            "hook": f"weightlab_register_{KINDS[kind]}"}


def _render(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


def files(name: str, kind: str, weightlab_version: str) -> dict[str, str]:
    """Relative path → content of the package to write."""
    v = {**names(name, kind), "weightlab_version": weightlab_version}
    root = resources.files(__name__) / "plugin"

    def read(*parts: str) -> str:
        return _render(root.joinpath(*parts).read_text(), v)

    pkg = f"src/{v['module']}"
    return {
        "pyproject.toml": read("pyproject.toml.tmpl"),
        "README.md": read("README.md.tmpl"),
        f"{pkg}/__init__.py": read("init.py.tmpl"),
        f"{pkg}/plugin.py": read("plugin.py.tmpl"),
        f"{pkg}/py.typed": "",
        f"{pkg}/{v['file']}.py": read("kinds", f"{kind}.py.tmpl"),
        f"tests/test_{v['component']}.py": read("kinds", f"test_{kind}.py.tmpl"),
    }


def write(name: str, kind: str, out: Path, *, force: bool = False,
          weightlab_version: str = "0.1") -> Path:
    """Write the package to ``out/weightlab-<name>``; refuses to overwrite without ``force``."""
    from weightlab.atomic import write_text

    content = files(name, kind, weightlab_version)
    dest = Path(out) / f"weightlab-{name}"
    existing = [p for p in content if (dest / p).exists()]
    if existing and not force:
        raise UsageError(f"{dest / existing[0]} exists; pass force=True to overwrite the "
                         f"template's files")
    for rel, text in content.items():
        write_text(dest / rel, text)
    return dest
