"""``weightlab list KIND`` and ``weightlab show KIND NAME``."""

from __future__ import annotations

import difflib
import inspect

import typer

from weightlab_cli.common import JSON_OPT, print_json, stdout_console, table


def _registry():
    from weightlab import plugins

    return plugins.registry()


def _kind(kind: str) -> str:
    from weightlab.components import KINDS
    from weightlab.errors import UsageError

    k = kind if kind.endswith("s") else kind + "s"
    if k not in KINDS:
        close = difflib.get_close_matches(k, KINDS, 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown kind {kind!r}{hint}; kinds: {', '.join(KINDS)}")
    return k


def list_components(kind: str = typer.Argument(..., help="models, datasets, matchers, "
                                               "normalizers, pruners, ensembles, executors or "
                                               "merge_methods"),
                    json_out: bool = JSON_OPT):
    """Every registered component of one kind, with its provider and summary."""
    k = _kind(kind)
    entries = _registry().all(k)
    rows = [{"name": e.name, "plugin": e.plugin, "summary": e.cls.summary,
             "examples": list(getattr(e.cls, "examples", ()))} for e in entries]
    if json_out:
        print_json(rows)
        return
    cols = ["name", "plugin", "summary"] + (["examples"] if k == "models" else [])
    table(k, cols, [[r["name"], r["plugin"], r["summary"]] +
                    ([", ".join(r["examples"])] if k == "models" else []) for r in rows])


def show_component(kind: str = typer.Argument(..., help="component kind"),
                   name: str = typer.Argument(..., help="component name (or plugin:name)"),
                   json_out: bool = JSON_OPT):
    """A component's parameters (type, default, help, range), provider and docstring."""
    k = _kind(kind)
    reg = _registry()
    entry = reg.entry(k, name)
    comp = reg.create(k, name)  # fills parameters implied by a model name
    values = comp.params_dict()
    params = []
    for p in entry.cls.parameters():
        p = dict(p)
        p["value"] = values.get(p["name"], p["default"])
        params.append(p)
    doc = inspect.cleandoc(entry.cls.__doc__ or "")
    data = {"kind": k, "name": entry.name, "requested": name, "plugin": entry.plugin,
            "summary": entry.cls.summary, "doc": doc, "parameters": params}
    if json_out:
        print_json(data)
        return
    con = stdout_console()
    con.print(f"[bold]{k[:-1]} {name}[/bold]  (from plugin [cyan]{entry.plugin}[/cyan])")
    con.print(entry.cls.summary, highlight=False)
    rows = []
    for p in params:
        rng = ""
        if p["choices"]:
            rng = "one of " + ", ".join(map(str, p["choices"]))
        elif p["min"] is not None or p["max"] is not None:
            rng = f"{'(' if p.get('min_exclusive') else '['}" \
                  f"{p['min'] if p['min'] is not None else '-∞'}, " \
                  f"{p['max'] if p['max'] is not None else '∞'}]"
        rows.append([p["name"], p["type"], p["value"], rng, p["help"]])
    if rows:
        table("parameters", ["name", "type", "value", "range", "help"], rows)
    else:
        con.print("no parameters")
    if doc:
        con.print()
        con.print(doc, highlight=False, markup=False)
