"""Operations: the typed functions that do each job end to end (train, merge, prune, …).

An operation is a plain function whose keyword parameters are its options. Each parameter may
carry an :class:`Opt` in ``Annotated[...]`` metadata (help, range, other spellings, whether it
names an input file or the output); the CLI, recipes and notebooks all call the same function,
and recipes validate a step against this signature before any work (no CLI involved).

Core registers its operations here; a plugin adds its own through the
``weightlab_register_operations`` hook (the sparse-soup plugin's ``soup``/``sms``, zipit's
``pfm``).

Example::

    from typing import Annotated
    from weightlab.ops.registry import Opt, operation

    @operation("double", out="file")
    def double(checkpoint: Annotated[Path, Opt("input checkpoint", input=True)],
               out: Annotated[Path | None, Opt("where to write")] = None) -> Result: ...
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weightlab.errors import UsageError


@dataclass(frozen=True)
class Opt:
    """What an operation's option means beyond its type."""

    help: str = ""
    min: float | None = None
    max: float | None = None
    aliases: tuple[str, ...] = ()   # other recipe spellings (a CLI flag's long name)
    input: bool = False             # names input files: their contents key a recipe's cache
    runner: bool = False            # set by the recipe runner itself (force, resume)


@dataclass
class Operation:
    """A registered operation: the function, what ``out`` is, and who provides it."""

    name: str
    func: Callable[..., Any]
    out: str | None = None          # "file", "dir", or "dir_with:<option>" (a dir when set)
    provider: str = "builtin"
    # a call made of independent member calls (train: one per model): ``members(options,
    # prefix)`` gives their step specs (none when the call stays whole) and ``gather``
    # ("module:function", called with options=…) the call's JSON result once they finished; a
    # recipe on an executor runs the members as steps of its graph (weightlab.executors)
    members: Callable[..., list[dict[str, Any]]] | None = None
    gather: str | None = None

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.func) or "").split("\n\n")[0].replace("\n", " ")

    def out_is_dir(self, options: dict[str, Any] | None = None) -> bool:
        if self.out and self.out.startswith("dir_with:"):
            return bool((options or {}).get(self.out.split(":", 1)[1]))
        return self.out == "dir"

    def parameters(self) -> list[tuple[inspect.Parameter, Any, Opt]]:
        """(parameter, annotation without Annotated, Opt) for each keyword option (computed
        once: resolving the string annotations costs milliseconds, and a recipe's runner asks
        for every step it plans)."""
        cached = self.__dict__.get("_parameters")
        if cached is None:
            cached = self.__dict__["_parameters"] = self._read_parameters()
        return list(cached)

    def _read_parameters(self) -> list[tuple[inspect.Parameter, Any, Opt]]:
        hints = typing.get_type_hints(self.func, include_extras=True)
        out = []
        for p in inspect.signature(self.func).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name.startswith("_"):
                continue
            ann = hints.get(p.name, Any)
            meta = Opt()
            if typing.get_origin(ann) is typing.Annotated:
                args = typing.get_args(ann)
                ann = args[0]
                meta = next((m for m in args[1:] if isinstance(m, Opt)), meta)
            out.append((p, ann, meta))
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


def operation(name: str, *, out: str | None = None,
              members: Callable[..., list[dict[str, Any]]] | None = None,
              gather: str | None = None) -> Callable[[Callable], Callable]:
    """Declare ``func`` as the operation ``name``; ``out`` says what its ``out`` option is;
    ``members``/``gather``: how one call splits into independent steps (see Operation)."""

    def wrap(func: Callable) -> Callable:
        func.__weightlab_operation__ = Operation(  # type: ignore[attr-defined]
            name, func, out, members=members, gather=gather)
        return func

    return wrap


def operations() -> dict[str, Operation]:
    """Every operation of every enabled plugin (core's through the built-in plugin), from the
    ``weightlab_register_operations`` hook; the first provider of a name wins."""
    from weightlab import plugins

    found: dict[str, Operation] = {}
    for plugin, funcs in plugins.state().operations.items():
        for func in funcs:
            op = func.__weightlab_operation__
            op.provider = plugin
            found.setdefault(op.name, op)
    return found


def get(name: str) -> Operation:
    """The operation ``name``; an unknown name gets the close ones and, when plugins are
    disabled, says which (their operations are not loaded)."""
    import difflib

    ops = operations()
    if name in ops:
        return ops[name]
    from weightlab import plugins

    off = [n for n, i in plugins.state().plugins.items() if i.status != "ok"]
    close = difflib.get_close_matches(name, list(ops), 1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    note = (f"; not loaded: plugin{'s' if len(off) > 1 else ''} {', '.join(off)} (disabled "
            f"by {plugins.DISABLE_ENV} or broken)") if off else ""
    raise UsageError(f"{name!r} is not an operation{hint}; operations: "
                     f"{', '.join(sorted(ops))}{note}")
