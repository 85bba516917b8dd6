"""State-dict key layouts of other codebases, and one-line descriptions of key mismatches.

A model family may declare ``foreign_layouts`` (see :class:`weightlab.components.Model`): for
each codebase, an ordered list of ``(regex, replacement)`` rules that rename that codebase's
keys to weightlab's. Rules are data (no code from a file ever runs); :func:`adopt` tries the
file's keys as they are, then each layout, and keeps the one under which the keys are exactly
the model's.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Rules = Sequence[tuple[str, str]]


def rename(key: str, rules: Rules) -> str:
    """``key`` after every rule in order (``re.sub`` with the rule's replacement)."""
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def adopt(state: Mapping[str, Any], expected: Sequence[str], layouts: Mapping[str, Rules]
          ) -> tuple[str | None, dict[str, Any]] | None:
    """``(layout, renamed state)`` whose keys are exactly ``expected`` (layout None: the file
    already uses weightlab's names), or None when no layout fits."""
    want = set(expected)
    if set(state) == want:
        return None, dict(state)
    for name, rules in layouts.items():
        renamed = {rename(k, rules): v for k, v in state.items()}
        if len(renamed) == len(state) and set(renamed) == want:
            return name, renamed
    return None


def closest_layout(state: Mapping[str, Any], expected: Sequence[str],
                   layouts: Mapping[str, Rules]) -> tuple[str | None, list[str]]:
    """The layout (None: as is) leaving the fewest keys unmatched, and the keys it gives."""
    want = set(expected)
    best: tuple[int, str | None, list[str]] = (len(want ^ set(state)), None, list(state))
    for name, rules in layouts.items():
        keys = [rename(k, rules) for k in state]
        miss = len(want ^ set(keys))
        if miss < best[0]:
            best = (miss, name, keys)
    return best[1], best[2]


def mismatch_line(got: Iterable[str], expected: Sequence[str]) -> str:
    """One line: counts of missing and unexpected keys, the first missing key (in the model's
    order) and the file's closest key to it — or the first unexpected key when none is
    missing."""
    got = list(got)
    have, want = set(got), set(expected)
    missing = [k for k in expected if k not in have]
    unexpected = [k for k in got if k not in want]
    counts = f"{len(missing)} model key(s) missing from the file, {len(unexpected)} unexpected"
    if missing:
        near = difflib.get_close_matches(missing[0], unexpected or got, n=1, cutoff=0.0)
        hint = f"; the file's closest key is {near[0]!r}" if near else ""
        return f"{counts}; first missing: {missing[0]!r}{hint}"
    near = difflib.get_close_matches(unexpected[0], list(expected), n=1, cutoff=0.0)
    hint = f" (the model's closest key is {near[0]!r})" if near else ""
    return f"{counts}; first unexpected: {unexpected[0]!r}{hint}"
