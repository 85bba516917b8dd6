"""Run one step spec where this code runs (every executor ends here): import the callable, call
it with the spec's kwargs, write its JSON result atomically into the run directory.

A finished step (its result file holds this spec's hash) returns the stored record without
running again. While the step runs, ``OUT.running`` names the host and process; a step that
raises leaves ``OUT.error.json`` with the one-line error and re-raises.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from weightlab.atomic import write_text
from weightlab.errors import UsageError
from weightlab.executors.spec import (
    StepFailed,
    check_spec,
    error_path,
    marker_path,
    read_json,
    read_result,
    result_path,
    spec_hash,
)


def resolve_call(call: str) -> Callable[..., Any]:
    module, _, name = call.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"call={call!r}: cannot import it ({type(e).__name__}: {e})") from None
    if not callable(fn):
        raise UsageError(f"call={call!r}: not callable")
    return fn


@contextlib.contextmanager
def _threads(cpus: float | None) -> Iterator[None]:
    """torch intra-op threads = the step's CPU share while it runs (restored afterwards, so an
    in-process step leaves the caller's setting alone)."""
    if not cpus:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_step(spec: dict[str, Any], run_dir: str | Path, *, device: str | None = None,
             threads: int | None = None) -> dict[str, Any]:
    """Run ``spec`` (unless its result is already there) and return its stored record
    ``{"id", "spec_hash", "result", "seconds", "host", "attempt"}``.

    ``device``: the device the executor assigned; passed as the ``device_kwarg`` kwarg when the
    spec names one. ``threads``: the CPUs the executor reserved for the step (a SLURM job's
    cpus-per-task), its torch threads unless the spec's ``resources.cpus`` says otherwise.
    Raises :class:`StepFailed` (after writing ``OUT.error.json``) when the callable raises."""
    check_spec(spec)
    done = read_result(spec, run_dir)
    if done is not None:
        return done
    kwargs = dict(spec.get("kwargs") or {})
    if device and spec.get("device_kwarg"):
        kwargs[spec["device_kwarg"]] = device
    out, marker, err = (result_path(spec, run_dir), marker_path(spec, run_dir),
                        error_path(spec, run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    err.unlink(missing_ok=True)
    attempt = int((read_json(marker) or {}).get("attempt", 0)) + 1  # a dead worker's marker
    write_text(marker, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                   "started": time.time(), "attempt": attempt}))
    t0 = time.perf_counter()
    try:
        fn = resolve_call(spec["call"])
        with _threads((spec.get("resources") or {}).get("cpus") or threads):
            result = fn(**kwargs)
        record = {"id": spec["id"], "call": spec["call"], "spec_hash": spec_hash(spec),
                  "result": result, "seconds": time.perf_counter() - t0,
                  "host": socket.gethostname(), "attempt": attempt}
        text = json.dumps(record, indent=1, allow_nan=False, default=_plain)
    except Exception as e:  # noqa: BLE001 - recorded beside the result, then re-raised
        line = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        write_text(err, json.dumps({"id": spec["id"], "spec_hash": spec_hash(spec),
                                    "error": line, "traceback": traceback.format_exc()}))
        marker.unlink(missing_ok=True)
        raise StepFailed(spec["id"], line) from e
    write_text(out, text + "\n")
    marker.unlink(missing_ok=True)
    return json.loads(text)


def _plain(x: Any) -> Any:
    """JSON for the few non-JSON values results commonly hold (paths, numpy/torch scalars)."""
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    raise TypeError(f"result value of type {type(x).__name__} is not JSON-serializable")


def stored_error(spec: dict[str, Any], run_dir: str | Path) -> str | None:
    """The one-line error the last run of this exact spec recorded, if any."""
    rec = read_json(error_path(spec, run_dir))
    return rec["error"] if rec and rec.get("spec_hash") == spec_hash(spec) else None


def stale_marker(spec: dict[str, Any], run_dir: str | Path) -> dict[str, Any] | None:
    """The ``.running`` record a worker left behind when it died mid-step (None if none)."""
    return read_json(marker_path(spec, run_dir))


# What a fresh worker process imports on its first step, heaviest first (measured on the 2-core
# development CPU: torch 1.6 s, torch._dynamo — imported by the optimizers' first step — 1.4 s);
# weightlab's own modules are lazy and cheap. The built-in digits are read from scikit-learn's
# CSV without importing sklearn.datasets (weightlab.data.datasets.digits_arrays).
WARM_MODULES = ("torch", "torch._dynamo", "weightlab.data.bundle",
                "weightlab.training.loop", "weightlab.merging", "weightlab.metrics",
                "weightlab.graph", "safetensors.torch")


def warm() -> int:
    """Import what steps pay for on their first call, and load the plugins' entry points, in
    this process (an executor's warm-up task: later steps on the same worker start at once).
    A module that is not installed is skipped. Returns this process id."""
    from weightlab import plugins

    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    plugins.registry()
    return os.getpid()
