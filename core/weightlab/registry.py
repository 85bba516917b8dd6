"""The component registry: which plugin provided which component, by kind and name."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from weightlab.components import BASES, KINDS, Component
from weightlab.errors import DuplicateComponentError, UnknownComponentError, UsageError


@dataclass
class Entry:
    kind: str
    name: str
    cls: type[Component]
    plugin: str

    @property
    def qualified(self) -> str:
        return f"{self.plugin}:{self.name}"


@dataclass
class Registry:
    entries: dict[str, dict[str, list[Entry]]] = field(
        default_factory=lambda: {k: {} for k in KINDS})
    # plugins the user disabled → the kinds they provide (from registry.toml; [] if unknown),
    # and the setting that disabled them: an unknown component names them
    disabled: dict[str, list[str]] = field(default_factory=dict)
    disabled_by: str = ""

    def add(self, kind: str, cls: Any, plugin: str) -> Entry:
        base = BASES[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{kind}: {cls!r} is not a subclass of weightlab.components."
                            f"{base.__name__}")
        if not cls.name or not isinstance(cls.name, str):
            raise TypeError(f"{kind}: {cls.__name__} has no name")
        entry = Entry(kind, cls.name, cls, plugin)
        self.entries[kind].setdefault(cls.name, []).append(entry)
        return entry

    def all(self, kind: str) -> list[Entry]:
        return [e for name in sorted(self.entries[kind]) for e in self.entries[kind][name]]

    def duplicates(self) -> list[list[Entry]]:
        return [es for kind in KINDS for es in self.entries[kind].values() if len(es) > 1]

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            close = difflib.get_close_matches(kind, KINDS, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"unknown component kind {kind!r}{hint}; kinds: {', '.join(KINDS)}")

    def entry(self, kind: str, name: str) -> Entry:
        """Find a component by ``name`` or ``plugin:name``; a model name may match a family."""
        self._check_kind(kind)
        table = self.entries[kind]
        singular = kind[:-1]
        requested, plugin = name, None
        if ":" in name:
            plugin, name = name.split(":", 1)
        found = table.get(name, [])
        if plugin is not None:
            if found and not any(e.plugin == plugin for e in found):
                options = ", ".join(f"'{e.qualified}'" for e in found)
                raise UnknownComponentError(f"plugin '{plugin}' provides no {singular} "
                                            f"'{name}'; choose {options}")
            found = [e for e in found if e.plugin == plugin]
        if not found and kind == "models":
            # a family answers for many names; two families answering is as ambiguous as two
            # components of one name
            found = [e for es in table.values() for e in es
                     if (plugin is None or e.plugin == plugin)
                     and e.cls.params_from_name(name) is not None]  # type: ignore[attr-defined]
        if len(found) > 1:
            names = " and ".join(f"'{e.plugin}'" for e in found)
            options = ", ".join(f"'{e.plugin}:{name}'" for e in found)
            raise DuplicateComponentError(
                f"{singular} '{name}' is provided by both {names}; choose one with {options}")
        if found:
            return found[0]
        known = sorted(table) + [x for es in table.values() for e in es
                                 for x in getattr(e.cls, "examples", ())]
        close = difflib.get_close_matches(name, known, 3, 0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(sorted(table)) or "none registered"
        raise UnknownComponentError(f"unknown {singular} '{requested}'{hint} (known: {shown})"
                                    f"{self._disabled_hint(kind, plugin)}")

    def _disabled_hint(self, kind: str, plugin: str | None) -> str:
        """'; plugin 'zipit' (matchers) is disabled by WEIGHTLAB_DISABLE_PLUGINS=zipit' when a
        disabled plugin may provide the component."""
        suspects = [n for n, kinds in self.disabled.items()
                    if n == plugin or kind in kinds or not kinds]
        if not suspects:
            return ""
        names = ", ".join(f"'{n}'" + (f" ({', '.join(self.disabled[n])})"
                                      if self.disabled[n] else "") for n in suspects)
        verb = "is" if len(suspects) == 1 else "are"
        return f"; plugin {names} {verb} disabled by {self.disabled_by}"

    def get(self, kind: str, name: str) -> type[Component]:
        return self.entry(kind, name).cls

    def create(self, kind: str, name: str, values: dict[str, Any] | None = None) -> Component:
        """Instantiate with validated parameters; model names also carry parameters."""
        entry = self.entry(kind, name)
        merged: dict[str, Any] = {}
        if kind == "models":
            merged.update(entry.cls.params_from_name(name.split(":", 1)[-1]) or {})  # type: ignore
        merged.update(values or {})
        return entry.cls.create(merged)
