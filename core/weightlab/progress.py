"""Progress of long loops on stderr, with what a researcher watches.

On a terminal: a rich bar with the step count, the live fields (epoch, loss, top-1 …), the
throughput (img/s) and the time left. When stderr is not a terminal (a cluster job's log, a
pipe): one plain line every ``interval`` seconds (``WEIGHTLAB_PROGRESS_INTERVAL``, default 30)
and a last one at the end, so a log file shows how the run went. ``WEIGHTLAB_PROGRESS=off``
silences both; ``=plain`` forces plain lines on a terminal.

The live fields come from ``stats``, a callable run in the caller's thread at most once per
refresh (1 s on a terminal, ``interval`` when piped): reading a GPU tensor there costs one
device sync per refresh, not one per step.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

PLAIN_INTERVAL_S = 30.0
TTY_REFRESH_S = 1.0


def duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: h:mm:ss or m:ss."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_fields(fields: dict[str, Any]) -> str:
    """``{"epoch": "3/20", "loss": 0.41, "top-1": 0.873}`` → ``epoch 3/20  loss 0.410
    top-1 87.30%`` (keys starting with "top" are fractions shown as percentages)."""
    parts = []
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, float):
            v = f"{100 * v:.2f}%" if k.startswith("top") else f"{v:.4g}"
        parts.append(f"{k} {v}")
    return "  ".join(parts)


class StepBar:
    """Progress over ``total`` steps, ``done`` of them already (a resumed run); ``total=None``
    when the count is not known in advance (then no percentage and no ETA).

    Example::

        bar = StepBar("training", total=steps, unit="img", stats=lambda: {"loss": 0.3})
        for batch in batches:
            ...
            bar.advance(1, items=len(batch))
        bar.stop()
    """

    def __init__(self, label: str, total: int | None, done: int = 0, *, unit: str = "img",
                 stats: Callable[[], dict[str, Any]] | None = None,
                 stream: TextIO | None = None, interval: float | None = None,
                 mode: str | None = None):
        self.label, self.total, self.done, self.unit = label, total, done, unit
        self.stats = stats
        self.fields: dict[str, Any] = {}
        self.stream = stream if stream is not None else sys.stderr
        mode = mode or os.environ.get("WEIGHTLAB_PROGRESS", "auto")
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self.interval = interval if interval is not None else float(
            os.environ.get("WEIGHTLAB_PROGRESS_INTERVAL", PLAIN_INTERVAL_S))
        self._start_done, self._items = done, 0
        self._t0 = self._last = time.perf_counter()
        self._p = None
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
            from rich.table import Column

            # the step count never folds; the fields give way (ellipsis) on a narrow terminal
            self._p = Progress(TextColumn(label), BarColumn(bar_width=16),
                               MofNCompleteColumn(table_column=Column(no_wrap=True)),
                               TextColumn("{task.fields[info]}", table_column=Column(
                                   no_wrap=True, overflow="ellipsis", ratio=1)),
                               console=Console(file=self.stream), transient=True)
            self._task = self._p.add_task(label, total=total, completed=done, info="")
            self._p.start()

    def set(self, **fields: Any) -> None:
        """Fields shown from now on (e.g. ``epoch="3/20"``); None removes one."""
        self.fields.update(fields)

    def rate(self) -> tuple[float, float]:
        """(steps/s, items/s) since this bar started."""
        dt = max(time.perf_counter() - self._t0, 1e-9)
        return (self.done - self._start_done) / dt, self._items / dt

    def eta(self) -> float | None:
        steps_per_s, _ = self.rate()
        if self.total is None or steps_per_s <= 0:
            return None
        return (self.total - self.done) / steps_per_s

    def line(self) -> str:
        """The status as one line: label, steps, fields, rate and time left."""
        _, items_per_s = self.rate()
        eta = self.eta()
        if self.total is None:
            steps = f"{self.label} {self.done}"
        else:
            pct = 100 * self.done / self.total if self.total else 100.0
            steps = f"{self.label} {self.done}/{self.total} ({pct:.0f}%)"
        parts = [steps,
                 format_fields(self.fields)]
        if self._items:
            parts.append(f"{items_per_s:,.0f} {self.unit}/s")
        if eta is not None and self.total is not None and self.done < self.total:
            parts.append(f"ETA {duration(eta)}")
        return "  ".join(p for p in parts if p)

    def advance(self, n: int = 1, *, items: int = 0) -> None:
        self.done += n
        self._items += items
        now = time.perf_counter()
        if self.mode == "off":
            return
        if self._p is None and (now - self._last < self.interval or self._finished()):
            return  # plain: the last line comes from stop()
        if self._p is not None and now - self._last < TTY_REFRESH_S and not self._finished():
            self._p.update(self._task, completed=self.done)
            return
        self._last = now
        if self.stats is not None:
            self.fields.update(self.stats())
        if self._p is not None:
            _, items_per_s = self.rate()
            eta = self.eta()
            info = format_fields(self.fields)
            if self._items:
                info += f"  {items_per_s:,.0f} {self.unit}/s"
            if eta is not None:
                info += f"  ETA {duration(eta)}"
            self._p.update(self._task, completed=self.done, info=info)
        else:
            self._print()

    def _finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()
        elif self.mode == "plain" and self.done > self._start_done:
            if self.stats is not None:
                self.fields.update(self.stats())
            elapsed = duration(time.perf_counter() - self._t0)
            print(f"{self.line()}  done in {elapsed}", file=self.stream, flush=True)
