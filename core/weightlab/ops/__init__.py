"""The operations layer: one typed function per job, called by the CLI, recipes and notebooks.

    import weightlab
    a, b = "runs/pair/model_1.safetensors", "runs/pair/model_2.safetensors"
    res = weightlab.merge([a, b], matcher="weight", normalizer="repair")
    res.model, res["evaluation"][-1]["top1"]

Importing this package is cheap; each operation imports torch when it runs. Plugins add
operations (``soup``, ``sms``, ``pfm``) through ``weightlab_register_operations``; reach any
operation by name with :func:`get`.
"""

from __future__ import annotations

from typing import Any

_WHERE = {
    "load": "models", "save": "models", "import_checkpoint": "models", "flops": "models",
    "graph_info": "models",
    "evaluate": "evaluation", "train": "training", "prune": "pruning",
    "merge": "merging", "interpolate": "merging", "diagnose": "merging", "compare": "comparing",
}
__all__ = [*_WHERE, "CORE_OPERATIONS", "get", "operations", "run"]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _WHERE:
        return getattr(importlib.import_module(f"weightlab.ops.{_WHERE[name]}"), name)
    if name == "CORE_OPERATIONS":
        return [__getattr__(n) for n in ("import_checkpoint", "flops", "graph_info", "evaluate",
                                         "train", "prune", "merge", "interpolate",
                                         "diagnose", "compare")]
    if name in ("get", "operations"):
        from weightlab.ops import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'weightlab.ops' has no attribute {name!r}")


def run(name: str, **options: Any) -> Any:
    """Run the operation ``name`` (a core or plugin operation) with ``options``."""
    from weightlab.ops.registry import get

    return get(name)(**options)
