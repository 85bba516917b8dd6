"""The plugin manager: built-ins first, then entry points one at a time, each isolated.

A plugin that fails to import, fails ``check_pending`` (a misspelled hook), or raises while
registering is recorded as broken with its error and skipped; nothing else is affected.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from weightlab import hookspecs
from weightlab.components import KINDS
from weightlab.markers import PROJECT
from weightlab.registry import Registry

ENTRY_POINT_GROUP = "weightlab"
DISABLE_ENV = "WEIGHTLAB_DISABLE_PLUGINS"
BUILTIN = "builtin"


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    status: str = "ok"  # ok | broken | disabled
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


@dataclass
class PluginState:
    manager: pluggy.PluginManager
    registry: Registry
    plugins: dict[str, PluginInfo]
    # plugin name → the operation functions it registered (weightlab_register_operations)
    operations: dict[str, list[Any]] = field(default_factory=dict)


class PluginWarning(UserWarning):
    """Something about the plugin set-up the user should hear of (a misspelled name in
    WEIGHTLAB_DISABLE_PLUGINS); the CLI prints it as one ``warning:`` line."""


def _disabled() -> set[str]:
    return {p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()}


def _catalogue_kinds() -> dict[str, list[str]]:
    """Plugin name → component kinds, from registry.toml (empty when it cannot be read)."""
    from weightlab.catalogue import load_catalogue
    from weightlab.errors import WeightlabError

    try:
        return {p["name"]: list(p["kinds"]) for p in load_catalogue()}
    except WeightlabError:
        return {}


def _note_disabled(state: PluginState, disabled: set[str]) -> None:
    """Tell the registry which plugins are disabled (an unknown component then says which
    disabled plugin may provide it); warn about names that match no installed plugin."""
    found = [n for n, i in state.plugins.items() if i.status == "disabled"]
    if found:
        kinds = _catalogue_kinds()
        state.registry.disabled = {n: kinds.get(n, []) for n in found}
        state.registry.disabled_by = f"{DISABLE_ENV}={os.environ.get(DISABLE_ENV, '')}"
    unknown = sorted(disabled - set(state.plugins) - {BUILTIN})
    if unknown:
        import difflib
        import warnings

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(state.plugins), 1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        warnings.warn(f"{DISABLE_ENV} names no installed plugin {', '.join(hints)}; installed: "
                      f"{', '.join(n for n in state.plugins if n != BUILTIN)}", PluginWarning,
                      stacklevel=3)


def _entry_points() -> list[tuple[md.EntryPoint, md.Distribution | None]]:
    """Entry points of the group, one per (distribution, name): editable installs can list the
    same distribution twice on sys.path."""
    seen: set[tuple[str, str]] = set()
    out = []
    # entry_points(group=…) reads every distribution's entry_points.txt but only the metadata
    # of the distributions in the group (md.distributions() parsed all ~100 METADATA files:
    # 0.3 s of every listing)
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        dname = ((dist.metadata["Name"] if dist else None) or "").lower().replace("_", "-")
        if (dname, ep.name) in seen:
            continue
        seen.add((dname, ep.name))
        out.append((ep, dist))
    return sorted(out, key=lambda x: x[0].name)


def _collect(state: PluginState, name: str, plugin: Any) -> None:
    """Call this plugin's register hooks alone and add what it returns to the registry."""
    info = state.plugins[name]
    found: list[tuple[str, Any]] = []
    for kind in KINDS:
        hook = getattr(state.manager.hook, f"weightlab_register_{kind}")
        for impl in hook.get_hookimpls():
            if impl.plugin is plugin:
                for cls in impl.function() or []:
                    found.append((kind, cls))
    tmp = Registry()
    for kind, cls in found:  # validate everything before touching the shared registry
        tmp.add(kind, cls, name)
    ops = _impls(state, "weightlab_register_operations", plugin)
    funcs = [f for impl in ops for f in (impl.function() or [])]
    bad = [f for f in funcs if not hasattr(f, "__weightlab_operation__")]
    if bad:
        raise TypeError(f"weightlab_register_operations returned {bad[0]!r}, which is not "
                        f"declared with @weightlab.ops.registry.operation")
    info.commands = command_names(state, name, plugin)
    for kind, cls in found:
        state.registry.add(kind, cls, name)
        info.components.setdefault(kind, []).append(cls.name)
    if funcs:
        state.operations[name] = funcs


def _impls(state: PluginState, hook_name: str, plugin: Any) -> list[Any]:
    hook = getattr(state.manager.hook, hook_name)
    return [impl for impl in hook.get_hookimpls() if impl.plugin is plugin]


def command_names(state: PluginState, name: str, plugin: Any, app: Any = None) -> list[str]:
    """Run this plugin's ``weightlab_register_commands`` on ``app`` (a scratch typer app when
    None, to check that registration works) and return the command names it added."""
    impls = _impls(state, "weightlab_register_commands", plugin)
    if not impls:
        return []
    import typer

    target = app if app is not None else typer.Typer()
    before = {id(c) for c in target.registered_commands} | \
        {id(g) for g in target.registered_groups}
    for impl in impls:
        impl.function(app=target)
    added = [c for c in target.registered_commands if id(c) not in before]
    added_groups = [g for g in target.registered_groups if id(g) not in before]
    return [c.name or c.callback.__name__ for c in added] + [g.name for g in added_groups]


def _register(state: PluginState, name: str, plugin: Any, components: bool = True) -> None:
    pm = state.manager
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except Exception as e:  # noqa: BLE001 - one plugin's failure must not stop the others
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        state.plugins[name].status = "broken"
        state.plugins[name].error = f"{type(e).__name__}: {e}"
        return
    if not components:
        return
    try:
        _collect(state, name, plugin)
    except Exception as e:  # noqa: BLE001
        pm.unregister(plugin)
        state.plugins[name].status = "broken"
        state.plugins[name].error = f"{type(e).__name__}: {e}"
        state.plugins[name].components = {}


def load(extra: list[tuple[str, Any]] | None = None, *, entry_points: bool = True,
         components: bool = True) -> PluginState:
    """Build the plugin manager and registry. ``extra`` registers in-process plugins (tests).
    ``components=False`` registers the plugins without calling their component hooks (what
    the CLI needs to add plugin commands without importing torch)."""
    from weightlab import builtins

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    state = PluginState(pm, Registry(), {})
    disabled = _disabled()
    candidates: list[tuple[str, Any, PluginInfo]] = [
        (BUILTIN, builtins, PluginInfo(BUILTIN, "weightlab", _version("weightlab"),
                                       builtins.__name__))]
    if entry_points:
        for ep, dist in _entry_points():
            dname = dist.metadata["Name"] if dist else None
            info = PluginInfo(ep.name, dname, dist.version if dist else None, ep.value)
            candidates.append((ep.name, ep, info))
    for name, obj in extra or []:
        candidates.append((name, obj, PluginInfo(name, None, None, getattr(obj, "__name__",
                                                                          repr(obj)))))
    for name, obj, info in candidates:
        if name in state.plugins:
            # one plugin name from two providers: keep the first, report the other as broken
            # under name@provider (never drop it silently)
            first, other = state.plugins[name], info.distribution or info.module
            info.name, info.status = f"{name}@{other}", "broken"
            info.error = (f"plugin name '{name}' is already taken by "
                          f"{first.distribution or first.module}; {other} was skipped")
            state.plugins.setdefault(info.name, info)
            continue
        state.plugins[name] = info
        if name in disabled and name != BUILTIN:
            info.status = "disabled"
            continue
        if isinstance(obj, md.EntryPoint):
            try:
                obj = obj.load()
            except Exception as e:  # noqa: BLE001
                info.status, info.error = "broken", f"{type(e).__name__}: {e}"
                continue
        _register(state, name, obj, components)
    _note_disabled(state, disabled)
    return state


def register_commands(app: Any, extra: list[tuple[str, Any]] | None = None) -> dict[str, str]:
    """Add every enabled plugin's CLI commands to ``app``. A plugin whose registration raises
    adds none of its commands; returns plugin name → error for those (the others work)."""
    import typer

    st = load(extra, components=False)
    failed: dict[str, str] = {}
    for name, info in st.plugins.items():
        if info.status != "ok" or name == BUILTIN:
            continue
        scratch = typer.Typer()
        try:
            command_names(st, name, st.manager.get_plugin(name), scratch)
        except Exception as e:  # noqa: BLE001 - one plugin's failure must not stop the CLI
            failed[name] = f"{type(e).__name__}: {e}"
            continue
        app.registered_commands.extend(scratch.registered_commands)
        app.registered_groups.extend(scratch.registered_groups)
    return failed


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


_STATE: PluginState | None = None


def state() -> PluginState:
    """The process-wide plugin state, loaded on first use."""
    global _STATE
    if _STATE is None:
        _STATE = load()
    return _STATE


def set_state(new: PluginState | None) -> None:
    global _STATE
    _STATE = new


def registry() -> Registry:
    return state().registry
