"""Time and peak memory per stage, and the memory budget a stage may plan with.

CUDA: ``max_memory_allocated`` between ``reset_peak_memory_stats`` calls (exact, tensors only).
CPU: a sampler thread reads the process's resident set size from ``/proc/self/statm`` every
2 ms (the peak over the stage; includes everything the process holds, so the figure above the
stage's start — ``extra_bytes`` — is the one to compare).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import torch

GiB = 1024 ** 3


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the lifetime peak is all we have
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True)
        self.interval, self.peak, self._halt = interval, _rss_bytes(), threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak, _rss_bytes())


class StageMeter:
    """``with meter.stage("inverse"): …`` records seconds, peak and extra bytes per stage; a
    stage entered again (once per group of blocks) accumulates its seconds and keeps the
    largest peak."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.stages: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            start = torch.cuda.memory_allocated(self.device)
        else:
            sampler = _RssSampler()
            start = sampler.peak
            sampler.start()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
                peak = torch.cuda.max_memory_allocated(self.device)
            else:
                peak = sampler.stop()
            now = {"seconds": time.perf_counter() - t0, "peak_bytes": peak,
                   "extra_bytes": max(0, peak - start)}
            before = self.stages.get(name)
            if before is not None:  # a stage run once per group: seconds add up, peaks max
                now = {"seconds": before["seconds"] + now["seconds"],
                       "peak_bytes": max(before["peak_bytes"], peak),
                       "extra_bytes": max(before["extra_bytes"], now["extra_bytes"])}
            self.stages[name] = now


def budget_bytes(device: torch.device | str, budget_gb: float | None) -> tuple[int, str]:
    """Bytes a computation may plan with and where the figure comes from: the given budget,
    else 90% of the free CUDA memory (counting the allocator's unused cache), else 4 GiB on
    CPU."""
    device = torch.device(device)
    if budget_gb is not None:
        return int(budget_gb * GiB), f"memory_budget_gb={budget_gb:g}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # blocks the caching allocator holds but no tensor uses are free to this process too
        free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(0.9 * free), f"90% of free CUDA memory ({free / GiB:.1f} GiB)"
    return 4 * GiB, "CPU default 4 GiB (set memory_budget_gb)"


def human_bytes(n: float) -> str:
    """1.50 GiB, 12.3 MiB, 40.0 KiB: the unit that keeps a small budget readable."""
    for unit, size in (("GiB", GiB), ("MiB", 2 ** 20)):
        if abs(n) >= size:
            return f"{n / size:.{2 if unit == 'GiB' else 1}f} {unit}"
    return f"{n / 1024:.1f} KiB"
