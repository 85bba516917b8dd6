"""Typed parameter dataclasses: the single source for ``show``, CLI parsing, recipes and docs.

A component declares ``Params`` as a dataclass whose fields come from :func:`param`::

    @dataclass
    class Params:
        max_iter: int = param(100, "coordinate-descent sweeps at most", min=1)
        order: str = param("random", "space visiting order", choices=("random", "forward"))
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any

from weightlab.errors import ParamError

_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None, min_exclusive: bool = False,
          check: Any = None) -> Any:
    """A dataclass field with its help text and the range or choices it accepts; ``check``
    (value → None, or a ValueError whose message says what is wrong) for values with syntax."""
    meta = {"help": help, "min": min, "max": max, "choices": choices,
            "min_exclusive": min_exclusive, "check": check}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class NoParams:
    """A component without parameters."""


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list[{_type_name(args[0])}]" if args else "list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ParamError as e:
                errors.append(str(e))
        raise ParamError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (list, tuple):
        inner = args[0] if args else str
        items = value.split(",") if isinstance(value, str) else list(value)
        items = [i for i in items if not (isinstance(i, str) and i.strip() == "")]
        out = [_coerce(i.strip() if isinstance(i, str) else i, inner, where) for i in items]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_TRUE | _BOOL_FALSE:
            return value.lower() in _BOOL_TRUE
        raise ParamError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ParamError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ParamError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise ParamError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ParamError(f"{where}: expected a string, got {value!r}")
    return value


def validate(instance: Any, prefix: str = "") -> Any:
    """Check every field of a params instance against its range and choices."""
    for f in dataclasses.fields(instance):
        v = getattr(instance, f.name)
        meta = f.metadata
        where = f"{prefix}{f.name}"
        values = v if isinstance(v, (list, tuple)) else [v]
        for item in values:
            if item is None:
                continue
            if meta.get("check") is not None:
                try:
                    meta["check"](item)
                except ValueError as e:
                    raise ParamError(f"{where}: {e}") from None
            if meta.get("choices") and item not in meta["choices"]:
                close = difflib.get_close_matches(str(item), [str(c) for c in meta["choices"]], 1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ParamError(f"{where}: {item!r} is not one of "
                                 f"{', '.join(map(str, meta['choices']))}{hint}")
            lo, hi = meta.get("min"), meta.get("max")
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if lo is not None and (item < lo or (meta.get("min_exclusive") and item == lo)):
                    op = ">" if meta.get("min_exclusive") else ">="
                    raise ParamError(f"{where}: {item} must be {op} {lo}")
                if hi is not None and item > hi:
                    raise ParamError(f"{where}: {item} must be <= {hi}")
    return instance


def build_params(cls: type, values: dict[str, Any] | None = None, *, prefix: str = "") -> Any:
    """Make a validated ``cls`` instance from user values (strings from the CLI are coerced)."""
    values = dict(values or {})
    types = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, raw in values.items():
        k = key.replace("-", "_")
        if k not in names:
            close = difflib.get_close_matches(k, names, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(names) if names else "none"
            raise ParamError(f"{prefix}{key}: unknown parameter{hint}; known: {known}")
        kwargs[k] = _coerce(raw, types[k], f"{prefix}{k}")
    return validate(cls(**kwargs), prefix)


def split_assignments(items: list[str] | str | None) -> list[str]:
    """``"lr=0.1,epochs=160"`` or repeated items → ``["lr=0.1", "epochs=160"]``; a piece with no
    ``=`` continues the previous value (``milestones=100,200`` stays one assignment)."""
    if isinstance(items, str):
        items = [items]
    out: list[str] = []
    for item in items or []:
        for piece in str(item).split(","):
            if "=" in piece or not out:
                out.append(piece.strip())
            else:
                out[-1] += "," + piece.strip()
    return [x for x in out if x]


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` (from repeated ``--param``) → ``{"a": "1", "b": "x"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ParamError(f"parameter {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def describe(cls: type) -> list[dict[str, Any]]:
    """One dict per parameter: name, type, default, help, min, max, choices, min_exclusive."""
    types = _field_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = None
        meta = f.metadata
        rows.append({
            "name": f.name, "type": _type_name(types[f.name]),
            "default": list(default) if isinstance(default, tuple) else default,
            "help": meta.get("help", ""), "min": meta.get("min"), "max": meta.get("max"),
            "choices": list(meta["choices"]) if meta.get("choices") else None,
            "min_exclusive": bool(meta.get("min_exclusive")),
        })
    return rows


def to_dict(instance: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(instance).items()}
