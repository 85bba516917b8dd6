"""Entry point: runs the typer app and turns errors into one line on stderr.

Exit codes: 0 ok, 1 failure, 2 usage error. ``--debug`` (anywhere) shows tracebacks.
"""

from __future__ import annotations

import os
import sys


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(Exit, Abort, ClickException) classes of every click in use: typer >= 0.2x runs on its
    own vendored copy (``typer._click``), whose exceptions are not ``click``'s."""
    import importlib

    import typer

    exits, aborts, errors = {typer.Exit}, {typer.Abort}, set()
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        exits.update(c for c in (getattr(mod, "Exit", None),) if c)
        aborts.update(c for c in (getattr(mod, "Abort", None),) if c)
        errors.update(c for c in (getattr(mod, "ClickException", None),) if c)
    return tuple(exits), tuple(aborts), tuple(errors)


def as_flags(message: str, command, args: list[str]) -> str:
    """Core names fields (``alpha=1.5 is outside [0, 1]``, ``pass force=True``); on the
    command line the user typed flags: ``--alpha 1.5 is outside …``, ``pass --force``."""
    import re

    sub = command
    for word in args:
        nxt = getattr(sub, "commands", {}).get(word) if hasattr(sub, "commands") else None
        if nxt is None:
            break
        sub = nxt
    for p in getattr(sub, "params", []):
        longs = [o for o in p.opts if o.startswith("--")]
        if not longs or not p.name:
            continue
        flag = longs[0]
        if getattr(p, "is_flag", False):
            message = re.sub(rf"\b{p.name}=True\b", flag, message)
        message = re.sub(rf"(?<![\w.-]){p.name}=", f"{flag} ", message)
    return message


def _one_line_warnings() -> None:
    """Warnings (a misspelled plugin in WEIGHTLAB_DISABLE_PLUGINS, …) as ``warning: …`` on
    stderr, without the source line Python prints by default."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while Python is still importing the command tree
        print("interrupted", file=sys.stderr)
        if argv is None:
            sys.exit(130)
        return 130


def _main(argv: list[str] | None) -> int:
    import typer
    from weightlab.errors import WeightlabError

    from weightlab_cli.app import app

    exits, aborts, click_errors = _click_exceptions()
    _one_line_warnings()

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("WEIGHTLAB_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="weightlab", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # typer turns Ctrl-C into a silent Exit(130), returned as the result
            print("interrupted", file=sys.stderr)
    except exits as e:
        code = e.exit_code
    except aborts:
        print("aborted", file=sys.stderr)
        code = 130
    except click_errors as e:
        if debug:
            raise
        e.show(file=sys.stderr)
        code = e.exit_code
    except WeightlabError as e:
        if debug:
            raise
        # exit 130: stopped on request (TrainingInterrupted says so itself), not a failure
        msg = as_flags(str(e), command, args)
        print(msg if e.exit_code == 130 else f"error: {msg}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)",
              file=sys.stderr)
        code = 1
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
