"""What a recipe step's cache key covers besides its options: the code that computes it and
the contents of the files it reads. Editing a plugin (an editable install keeps its version)
or replacing a checkpoint re-runs what depends on it; editing an unrelated plugin does not."""

from __future__ import annotations

import hashlib
import importlib
from functools import cache
from pathlib import Path
from typing import Any

# option name → component kind whose provider's code the step depends on
_COMPONENT_KINDS = {"matcher": "matchers", "normalizer": "normalizers", "pruner": "pruners",
                    "ensemble": "ensembles", "method": "ensembles", "model": "models",
                    "data": "datasets", "lmc_matcher": "matchers",
                    "lmc_normalizer": "normalizers"}


@cache
def package_fingerprint(package: str) -> str:
    """SHA-256 over the package's Python sources and data files (names and contents); "?" for
    what is no importable package (a plugin registered in-process by a test)."""
    try:
        mod = importlib.import_module(package)
    except (ImportError, ValueError, TypeError):
        return "?"
    if not getattr(mod, "__file__", None):
        return "?"
    h = hashlib.sha256()
    if not hasattr(mod, "__path__"):  # a single-module plugin: its own file only
        h.update(Path(mod.__file__).read_bytes())
        return h.hexdigest()[:16]
    root = Path(mod.__file__).parent
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in
                    (".py", ".toml", ".json") and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _plugin_package(plugin: str) -> str | None:
    from weightlab import plugins

    info = plugins.state().plugins.get(plugin)
    if info is None or not info.module:
        return None
    return info.module.split(":")[0].split(".")[0]


def code_key(cmd: Any, options: dict[str, Any]) -> dict[str, str]:
    """Version and code fingerprint of weightlab and of each plugin the step uses: the one
    providing the operation and those providing the components its options name."""
    from weightlab import __version__, plugins
    from weightlab.recipes.commands import OPERATION_COMPONENT_OPTIONS

    used = {"builtin", cmd.operation.provider}
    reg = plugins.registry()
    kinds = {**_COMPONENT_KINDS, **OPERATION_COMPONENT_OPTIONS.get(cmd.name, {})}
    for key, kind in kinds.items():
        names = options.get(key), options.get(f"{key}s")
        for value in names:
            if not isinstance(value, str) or not value or "${" in value:
                continue
            for name in value.split(","):
                if name.strip() in ("", "none"):
                    continue
                try:
                    used.add(reg.entry(kind, name.strip()).plugin)
                except Exception:  # noqa: BLE001 - an unknown name was reported by validation
                    continue
    out = {"weightlab": f"{__version__}:{package_fingerprint('weightlab')}"}
    state = plugins.state()
    for plugin in sorted(used - {"builtin"}):
        package = _plugin_package(plugin)
        version = state.plugins[plugin].version if plugin in state.plugins else None
        out[plugin] = f"{version}:{package_fingerprint(package) if package else '?'}"
    return out


def input_digests(cmd: Any, options: dict[str, Any]) -> dict[str, list[str | None]]:
    """Per input option (declared ``Opt(input=True)``), a digest of each file it names: the
    tensors' SHA-256 from a weightlab checkpoint's header, else of the file's bytes."""
    inputs = {p.name for p, _, meta in cmd.operation.parameters() if meta.input}
    out = {}
    for key in sorted(inputs & set(options)):
        value = options[key]
        items = value if isinstance(value, list) else [value]
        out[key] = [file_digest(Path(v)) if isinstance(v, (str, Path)) else None
                    for v in items]
    return out


def file_digest(path: Path) -> str | None:
    if not path.is_file():
        return None
    if path.suffix == ".safetensors":
        from weightlab.checkpoint_header import read_header
        from weightlab.errors import CheckpointError

        try:
            digest = read_header(path).get("sha256")
            if digest:
                return digest
        except CheckpointError:
            pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
