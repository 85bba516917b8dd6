"""A step spec: one unit of independent work described as data, so that any executor (this
process, a local process, a Ray task, a SLURM job) can run it and write the same files.

    {"id": "train_a",                          unique within a graph
     "call": "weightlab.executors.tasks:train", module:function, imported by the worker
     "kwargs": {...},                          JSON values only; relative paths are the callee's
     "out": "steps/train_a.json",              result file, relative to the run directory
     "resources": {"cpus": 1, "gpus": 0},      optional: what one run of the step needs
     "device_kwarg": "device",                 optional: the kwarg that receives the device the
                                               executor assigned (local --devices, Ray/SLURM GPUs)
     "here": true}                             optional: bookkeeping (reads a few files, no
                                               torch): run in the calling process, not sent out

Beside the result the worker keeps two small files: ``OUT.running`` while the step runs (host,
pid, start time, attempt) and ``OUT.error.json`` when the step raised. A result counts as done
only when its ``spec_hash`` equals the hash of the spec now asked for (:func:`spec_hash`), so a
changed spec is recomputed and an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from weightlab.errors import UsageError, WeightlabError

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")
CALL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
FIELDS = {"id", "call", "kwargs", "out", "resources", "device_kwarg", "here"}
# fields that say where or how a step runs, not what it computes: not part of its hash
_PLACEMENT = ("resources", "device_kwarg", "here")


class StepFailed(WeightlabError):
    """A step raised; ``error`` is its one-line message. Not retried: it would raise again."""

    def __init__(self, step: str, error: str):
        super().__init__(f"step {step!r} failed: {error}")
        self.step, self.error = step, error

    def __reduce__(self):  # crosses process boundaries (Ray, submitit) intact
        return (type(self), (self.step, self.error))


class WorkerLost(WeightlabError):
    """The process running a step died without a result or an error (killed, out of memory,
    node lost, time limit); the step may be run again."""

    def __init__(self, step: str, detail: str):
        super().__init__(f"step {step!r}: its worker stopped without finishing ({detail})")
        self.step, self.detail = step, detail

    def __reduce__(self):
        return (type(self), (self.step, self.detail))


def check_spec(spec: Any) -> dict[str, Any]:
    """``spec`` if it is a valid step spec; otherwise a UsageError naming the field."""
    if not isinstance(spec, dict):
        raise UsageError(f"step spec: expected a JSON object, got {type(spec).__name__}")
    sid = spec.get("id")
    if not isinstance(sid, str) or not ID.fullmatch(sid):
        raise UsageError(f"step spec id={sid!r}: expected letters, digits, '_', '-', '.', '/'")
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise UsageError(f"step {sid!r}: unknown field(s) {', '.join(unknown)}; expected "
                         f"{', '.join(sorted(FIELDS))}")
    if not isinstance(spec.get("call"), str) or not CALL.fullmatch(spec["call"]):
        raise UsageError(f"step {sid!r}: call={spec.get('call')!r} is not 'module:function'")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise UsageError(f"step {sid!r}: kwargs={spec['kwargs']!r} is not an object")
    out = spec.get("out")
    if not isinstance(out, str) or not out or Path(out).is_absolute() or ".." in Path(out).parts:
        raise UsageError(f"step {sid!r}: out={out!r} must be a path inside the run directory")
    if not isinstance(spec.get("here", False), bool):
        raise UsageError(f"step {sid!r}: here={spec['here']!r}: expected true or false")
    for key, value in (spec.get("resources") or {}).items():
        if key not in ("cpus", "gpus") or not isinstance(value, int | float) or value < 0:
            raise UsageError(f"step {sid!r}: resources.{key}={value!r}: expected cpus or gpus "
                             f">= 0")
    try:
        json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UsageError(f"step {sid!r}: not JSON-serializable ({e})") from None
    return spec


def spec_hash(spec: dict[str, Any]) -> str:
    """SHA-256 of what the step computes: call, kwargs and out (canonical JSON)."""
    core = {k: v for k, v in spec.items() if k not in _PLACEMENT}
    text = json.dumps(core, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def result_path(spec: dict[str, Any], run_dir: str | Path) -> Path:
    return Path(run_dir) / spec["out"]


def marker_path(spec: dict[str, Any], run_dir: str | Path) -> Path:
    p = result_path(spec, run_dir)
    return p.with_name(p.name + ".running")


def error_path(spec: dict[str, Any], run_dir: str | Path) -> Path:
    p = result_path(spec, run_dir)
    return p.with_name(p.name + ".error.json")


def read_result(spec: dict[str, Any], run_dir: str | Path) -> dict[str, Any] | None:
    """The stored record of this exact spec ({"spec_hash", "result", "seconds", …}), or None
    when there is none or it belongs to another version of the spec."""
    path = result_path(spec, run_dir)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("spec_hash") == spec_hash(spec) else None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
