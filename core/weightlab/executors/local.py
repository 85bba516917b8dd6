"""The built-in ``local`` executor: steps in this process one after another, or in worker
processes on this machine (``workers`` at once; with ``devices``, one process per device)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from weightlab.components import Executor
from weightlab.errors import UsageError
from weightlab.executors.spec import StepFailed, WorkerLost, check_spec
from weightlab.executors.step import run_step
from weightlab.executors.worker import STEP_FAILED
from weightlab.params import param


@dataclass
class LocalParams:
    workers: int = param(0, "steps at once, each in its own process; 0: one per device when "
                            "devices are given, else steps run one after another in this "
                            "process", min=0)
    devices: list[str] = param([], "devices handed to worker processes in turn, e.g. "
                                   "cuda:0,cuda:1 (empty: the step's own device)")
    threads: int = param(0, "torch threads of each worker process (a step's resources.cpus "
                            "wins); 0: this machine's cores shared among the workers", min=0)


class LocalExecutor(Executor):
    """Runs steps on this machine. With ``workers=0`` and no ``devices`` each step runs in this
    process at submission (nothing to set up; a failure is the step's own exception). Otherwise
    a pool of ``workers`` threads each starts ``python -m weightlab.executors.worker`` per step
    (so a crash, a kill or an out-of-memory takes one step down, not the caller), handing out
    ``devices`` so that no two running steps share one.

    Example::

        ex = LocalExecutor(workers=2, devices=["cuda:0", "cuda:1"])
        run_graph(specs, deps, ex, "runs/study")
    """

    name = "local"
    summary = "This machine: in process, or one worker process per device"
    Params = LocalParams

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        p = self.params
        check_devices(p.devices)
        self.slots = p.workers or len(p.devices)
        self._pool: ThreadPoolExecutor | None = None
        self._free: queue.Queue[str | None] = queue.Queue()
        if self.slots:
            self._pool = ThreadPoolExecutor(max_workers=self.slots,
                                            thread_name_prefix="weightlab-local")
            for k in range(self.slots):  # one device per running step, in turn
                self._free.put(p.devices[k % len(p.devices)] if p.devices else None)

    def submit(self, spec: dict[str, Any], run_dir: str) -> Future:
        check_spec(spec)
        if self._pool is None:
            fut: Future = Future()
            try:
                fut.set_result(run_step(spec, run_dir))
            except Exception as e:  # noqa: BLE001 - handed to the caller through the future
                fut.set_exception(e)
            return fut
        return self._pool.submit(self._in_process, spec, run_dir)

    def _in_process(self, spec: dict[str, Any], run_dir: str) -> dict[str, Any]:
        device = self._free.get()
        # each worker gets its share of the cores (torch would start one thread per core in
        # every worker: ``workers`` × cores threads on the machine's cores)
        threads = self.params.threads or max(1, (os.cpu_count() or 1) // self.slots)
        try:
            return run_worker(spec, run_dir, device, threads=threads)
        finally:
            self._free.put(device)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def run_worker(spec: dict[str, Any], run_dir: str, device: str | None = None, *,
               threads: int | None = None) -> dict[str, Any]:
    """``spec`` in a fresh ``python -m weightlab.executors.worker`` process (``threads``
    torch threads unless the spec's ``resources.cpus`` says otherwise); its record, or
    StepFailed (the step raised) / WorkerLost (the process died)."""
    env = dict(os.environ)
    cpus = (spec.get("resources") or {}).get("cpus") or threads
    if cpus:
        env["OMP_NUM_THREADS"] = str(max(1, int(cpus)))
    args = [sys.executable, "-m", "weightlab.executors.worker", run_dir]
    proc = subprocess.run(args + ([device] if device else []), input=json.dumps(spec),
                          capture_output=True, text=True, env=env)
    if proc.returncode == 0:
        from weightlab.executors.spec import read_result

        record = read_result(spec, run_dir)
        if record is None:
            raise WorkerLost(spec["id"], "the worker exited without writing its result")
        return record
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    if proc.returncode == STEP_FAILED:
        raise StepFailed(spec["id"], lines[-1] if lines else "unknown error")
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit status {proc.returncode}: {lines[-1] if lines else 'no message'}")
    raise WorkerLost(spec["id"], how)


def check_devices(devices: list[str]) -> None:
    for d in devices:
        if not (d == "cpu" or d == "cuda" or d.startswith("cuda:") or d == "mps"):
            raise UsageError(f"devices={d!r}: expected cpu, cuda, cuda:N or mps")


EXECUTORS = [LocalExecutor]
