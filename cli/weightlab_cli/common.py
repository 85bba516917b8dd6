"""The CLI's output helpers and shared options live in core (:mod:`weightlab.console`) so that
plugins' commands use the same ones; re-exported here for the built-in commands."""

from weightlab.console import (  # noqa: F401
    DATA_DIR_OPT,
    DEVICE_OPT,
    FORCE_OPT,
    JSON_OPT,
    PARAM_OPT,
    fmt,
    info,
    pct,
    print_json,
    stderr_console,
    stdout_console,
    table,
)
