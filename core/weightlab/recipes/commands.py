"""What a recipe step may say, read from the operation it runs (:mod:`weightlab.ops`): each
option's name, other spellings, type, range, whether it repeats and whether it is required.
A step's options are checked against this signature before any work; the runner then calls
the operation with them (no CLI involved).

Component options (``matcher = "weight"``, ``normalizer``, ``pruner``, ``model``, ``data`` …)
are looked up in the registry, and their parameter tables (``matcher_param = {max_iter = 50}``)
are validated against the component's ``Params`` dataclass with
:func:`weightlab.params.build_params` — the same source the CLI and ``weightlab show`` use.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# options the runner sets itself (declared with Opt(runner=True) on the operation)
RUNNER_OPTIONS = ("force", "resume")
# option name → component kind; anything named ``<option>_param`` holds its parameters
COMPONENT_OPTIONS = {"matcher": "matchers", "normalizer": "normalizers", "pruner": "pruners",
                     "ensemble": "ensembles", "soup": "ensembles", "method": "ensembles",
                     "model": "models", "data": "datasets"}
# options whose kind depends on the operation: merge's ``method`` names a merge method
OPERATION_COMPONENT_OPTIONS = {"merge": {"method": "merge_methods"}}
# comma-separated lists of components (sweeps: ``matchers = "weight,activation"``)
LIST_COMPONENT_OPTIONS = {f"{k}s": v for k, v in COMPONENT_OPTIONS.items()
                          if k not in ("model", "data")}


@dataclass
class Option:
    name: str           # the Python name (also the recipe key)
    flags: list[str]    # --matcher, -o …
    off_flags: list[str]  # --no-evaluate
    annotation: Any
    multiple: bool      # repeatable option or variadic argument
    required: bool
    default: Any
    is_flag: bool
    positional: bool
    min: float | None
    max: float | None
    help: str

    @property
    def keys(self) -> list[str]:
        """Every spelling a recipe may use: the Python name and the long flags."""
        out = [self.name]
        out += [f.lstrip("-").replace("-", "_") for f in self.flags if f.startswith("--")]
        return list(dict.fromkeys(out))

    def scalar_type(self) -> Any:
        tp = self.annotation
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (list, tuple) or (self.multiple and args):
            return args[0] if args else str
        if args and typing.get_origin(tp) is not None:  # Optional[X]
            return args[0]
        return tp


@dataclass
class Command:
    name: str
    options: list[Option]
    help: str

    def find(self, key: str) -> Option | None:
        for o in self.options:
            if key in o.keys:
                return o
        return None

    def keys(self) -> list[str]:
        return [o.name for o in self.options if o.name not in RUNNER_OPTIONS]

    def has(self, name: str) -> bool:
        return any(o.name == name for o in self.options)

    operation: Any = None  # the weightlab.ops.registry.Operation

    def out_by_default(self) -> bool:
        """Whether the operation writes ``out`` (a file or a directory) whenever it runs in a
        recipe: the runner then points it into the step's directory."""
        return self.operation is not None and self.operation.out is not None

    def out_is_dir(self, options: dict[str, Any] | None = None) -> bool:
        """Whether ``out`` names a directory (train, sms; prune with sweep)."""
        return self.operation is not None and self.operation.out_is_dir(options)


def command(name: str) -> Command:
    """The recipe signature of operation ``name``: every option declared with
    ``Annotated[..., Opt(...)]`` (callbacks such as ``log`` are not recipe options)."""
    import inspect

    from weightlab.ops.registry import get

    op = get(name)
    opts = []
    for p, ann, meta in op.parameters():
        if p.name in ("log", "on_result", "on_step"):
            continue
        opts.append(Option(
            name=p.name, flags=[f"--{a}" for a in meta.aliases], off_flags=[],
            annotation=ann, multiple=_is_list(ann),
            required=p.default is inspect.Parameter.empty,
            default=None if p.default is inspect.Parameter.empty else p.default,
            is_flag=ann is bool, positional=False, min=meta.min, max=meta.max,
            help=meta.help))
    return Command(name, opts, op.summary, operation=op)


def _is_list(tp: Any) -> bool:
    if typing.get_origin(tp) in (list, tuple):
        return True
    return any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(tp))


# ---- value checks ---------------------------------------------------------------------------

def check_value(opt: Option, value: Any) -> str | None:
    """None when ``value`` fits the option, else what is wrong (one line)."""
    if opt.name.endswith("param"):
        return None if param_table(value) is not None else \
            f"expected a table of parameters or key=value strings, got {value!r}"
    if isinstance(value, list) and not opt.multiple:
        return f"expected one value, got a list {value!r}"
    arms = _arms(opt.annotation)
    if isinstance(value, list):
        elems = [typing.get_args(a)[0] if typing.get_args(a) else Any
                 for a in arms if typing.get_origin(a) in (list, tuple)]
        for v in value:
            problem = _first_fit(elems or [Any], v, opt)
            if problem:
                return problem
        return None
    return _first_fit([a for a in arms if typing.get_origin(a) not in (list, tuple)] or
                      [Any], value, opt)


def _arms(tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    if args and (typing.get_origin(tp) is typing.Union or type(tp).__name__ == "UnionType"):
        return [a for a in args if a is not type(None)]
    return [tp]


def _first_fit(types: list[Any], v: Any, opt: Option) -> str | None:
    """None when ``v`` fits one of ``types``, else the first type's complaint."""
    problems = [_check_scalar(tp, v, opt) for tp in types]
    return None if any(p is None for p in problems) else problems[0]


def _check_scalar(tp: Any, v: Any, opt: Option) -> str | None:
    if isinstance(v, dict) and typing.get_origin(tp) is not dict and tp is not dict:
        return f"expected a single value, got a table {v!r}"
    if tp is bool:
        return None if isinstance(v, bool) else f"expected true or false, got {v!r}"
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"expected an integer, got {v!r}"
    elif tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"expected a number, got {v!r}"
    elif tp in (str, Path):
        if opt.name.endswith("param") and isinstance(v, dict):
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            return f"expected a string, got {v!r}"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if opt.min is not None and v < opt.min:
            return f"{v} is below the minimum {opt.min}"
        if opt.max is not None and v > opt.max:
            return f"{v} is above the maximum {opt.max}"
    return None



def param_table(value: Any) -> dict[str, Any] | None:
    """A ``*_param`` value as a dict: a TOML table, or a list of ``key=value`` strings."""
    if isinstance(value, dict):
        return value
    items = value if isinstance(value, list) else [value]
    out = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            return None
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def component_problems(cmd: Command, options: dict[str, Any]) -> list[tuple[str, str]]:
    """(option, problem) for every component name unknown to the registry and every component
    parameter its ``Params`` rejects. Values still holding ``${…}`` references are skipped."""
    from weightlab import plugins
    from weightlab.errors import WeightlabError as Err

    reg = plugins.registry()
    out: list[tuple[str, str]] = []
    chosen: dict[str, Any] = {}
    kinds = {**COMPONENT_OPTIONS, **OPERATION_COMPONENT_OPTIONS.get(cmd.name, {}),
             **LIST_COMPONENT_OPTIONS}
    for key, kind in kinds.items():
        if key not in options or not cmd.has(key) or _unresolved(options[key]):
            continue
        value = options[key]
        listed = key in LIST_COMPONENT_OPTIONS
        names = value.split(",") if listed and isinstance(value, str) else \
            list(value) if listed and isinstance(value, list) else [value]  # TOML list too
        for name in names:
            name = str(name).strip()
            if name in ("", "none") and kind != "models":
                continue
            try:
                chosen[key] = (reg.entry(kind, name), name)
            except Err as e:
                out.append((key, str(e)))
    for key, value in options.items():
        base = _param_base(cmd, key)
        if base is None or _unresolved(value):
            continue
        table = param_table(value)
        if table is None:
            out.append((key, f"expected a table of parameters or key=value strings, got "
                             f"{value!r}"))
            continue
        if base == "train":
            from weightlab.training.config import TrainConfig

            cls, prefix = TrainConfig, "train."
        elif base in chosen:
            entry, name = chosen[base]
            cls, prefix = entry.cls.Params, f"{entry.name}."
            if entry.kind == "models":  # a model name implies parameters too
                table = {**(entry.cls.params_from_name(name.split(":")[-1]) or {}), **table}
        else:
            continue
        out += [(key, e) for e in params_problems(cls, table, prefix)]
    if cmd.name == "train" and isinstance(options.get("recipe"), str) and \
            not _unresolved(options["recipe"]):
        try:  # the training recipe (recipes/train/NAME.toml) exists and is valid
            from weightlab.training import recipes as train_recipes

            train_recipes.load(options["recipe"])
        except Err as e:
            out.append(("recipe", str(e)))
    if "model" in chosen and not any(_param_base(cmd, k) == "model" for k in options):
        entry, name = chosen["model"]
        try:  # the name alone may carry invalid parameters (cifar_resnet21)
            reg.create("models", name)
        except Err as e:
            out.append(("model", str(e)))
    return out


def train_settings_problems(cmd: Command, options: dict[str, Any]) -> list[str]:
    """``train``'s own options (epochs, lr, schedule …) checked against TrainConfig."""
    if cmd.name != "train":
        return []
    from weightlab.training.config import TrainConfig

    fields = {"epochs", "batch_size", "lr", "schedule", "seed", "save_epochs"}
    values = {k: v for k, v in options.items()
              if k in fields and v is not None and not _unresolved(v)}
    return params_problems(TrainConfig, values, "train.")


def params_problems(cls: type, values: dict[str, Any], prefix: str) -> list[str]:
    """Every rejected parameter (not just the first): each is built on its own."""
    from weightlab.errors import WeightlabError as Err
    from weightlab.params import build_params

    out = []
    for k, v in values.items():
        try:
            build_params(cls, {k: v}, prefix=prefix)
        except Err as e:
            out.append(str(e))
    return out


def _param_base(cmd: Command, key: str) -> str | None:
    """The component option a ``*_param`` option belongs to (``model_param`` → model)."""
    opt = cmd.find(key)
    if opt is None or not opt.name.endswith("_param"):
        return None
    return opt.name[: -len("_param")]


def _unresolved(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, list):
        return any(_unresolved(v) for v in value)
    if isinstance(value, dict):
        return any(_unresolved(v) for v in value.values())
    return False


# ---- display -------------------------------------------------------------------------------

def call_text(cmd: Command, options: dict[str, Any]) -> str:
    """A step as the Python call it makes: ``weightlab.operation('merge')(matcher='weight')``."""
    args = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return f"weightlab.operation({cmd.name!r})({args})"
