"""weightlab: a plugin platform for weight-space research on trained image classifiers.

The operations are importable from here (``weightlab.merge``, ``weightlab.train``, …; see
:mod:`weightlab.ops`). Importing this package is cheap: torch and plugins load only when an
operation runs.
"""

from __future__ import annotations

from typing import Any

from weightlab.markers import hookimpl, hookspec

__version__ = "0.1.0"

_OPS = ("load", "save", "import_checkpoint", "flops", "graph_info", "evaluate", "train", "prune",
        "merge", "interpolate", "diagnose", "compare")
__all__ = ["hookimpl", "hookspec", "__version__", "operation", "registry", *_OPS]


def __getattr__(name: str) -> Any:
    if name in _OPS:
        from weightlab import ops

        return getattr(ops, name)
    if name == "operation":  # any operation by name, plugins' included: weightlab.operation("soup")
        from weightlab.ops.registry import get

        return get
    if name == "registry":
        from weightlab import plugins

        return plugins.registry
    raise AttributeError(f"module 'weightlab' has no attribute {name!r}")
