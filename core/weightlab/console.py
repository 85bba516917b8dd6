"""What every command prints with, core's and plugins' alike: tables or JSON on stdout,
messages on stderr, and the option declarations commands share (``--json``, ``--device`` …).
Plugins' commands (``weightlab_register_commands``) import these from here, never from the
CLI package."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

JSON_OPT = typer.Option(False, "--json", help="print JSON to stdout instead of a table")
DEVICE_OPT = typer.Option(None, "--device", help="cpu, cuda, cuda:1 … (default: cuda if present)")
FORCE_OPT = typer.Option(False, "--force", help="overwrite existing outputs")
DATA_DIR_OPT = typer.Option(None, "--data-dir", help="dataset root (default: $WEIGHTLAB_DATA "
                                                      "or ./data)")
PARAM_OPT = typer.Option(None, "--param", "-p", help="component parameter key=value (repeatable)")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=json_default) + "\n")


def plain(data: Any) -> Any:
    """``data`` as plain JSON values, converted as ``print_json`` converts them."""
    return json.loads(json.dumps(data, default=json_default))


def json_default(o: Any) -> Any:
    """What ``json`` cannot write: tensors and arrays as lists, sets and tuples as lists, the
    rest as its string."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


# piped or redirected stdout (`make demo | cat`, a log file): rich would assume 80 columns and
# fold checkpoint paths mid-name; a wide console lets every table take its natural width (an
# explicit COLUMNS, as the docs generator sets, still wins)
PIPED_WIDTH = 10_000


def stdout_console():
    import os

    from rich.console import Console

    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return Console(soft_wrap=False)
    return Console(soft_wrap=False, width=PIPED_WIDTH)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def info(msg: str) -> None:
    stderr_console().print(msg, highlight=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    stdout_console().print(t)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"
