"""The ``slurm`` executor: steps as SLURM jobs through submitit; the steps that are ready
together are submitted as one job array. ``cluster=local`` uses submitit's local executor (a
process per job on this machine, same code path) for tests and dry runs. Every job runs
:func:`weightlab.executors.step.run_step`; the run directory must be on a file system the
compute nodes see, and they need the same Python environment."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightlab.components import Executor
from weightlab.errors import UsageError, WeightlabError
from weightlab.executors.spec import check_spec
from weightlab.params import param


@dataclass
class SlurmParams:
    partition: str = param("", "SLURM partition (--partition); empty: the cluster's default")
    time: int = param(60, "time limit per step in minutes (--time)", min=1)
    gpus: int = param(0, "GPUs per step (--gpus-per-node)", min=0)
    cpus: int = param(1, "CPUs per step (--cpus-per-task)", min=1)
    mem_gb: float = param(0.0, "memory per step in GiB (--mem); 0: the partition's default",
                          min=0.0)
    array_parallelism: int = param(64, "array tasks running at once (--array=…%N)", min=1)
    account: str = param("", "account to charge (--account)")
    qos: str = param("", "quality of service (--qos)")
    setup: list[str] = param([], "shell lines run before each job, e.g. 'source .venv/bin/"
                                 "activate' or 'module load cuda'")
    folder: str = param("", "submitit's job scripts and logs (default RUN_DIR/.submitit)")
    cluster: str = param("slurm", "slurm; or local/debug: submitit's executors on this machine",
                         choices=("slurm", "local", "debug"))
    poll: float = param(2.0, "seconds between job state checks", min=0.05)


def _run(spec: dict[str, Any], run_dir: str, gpus: int, cpus: int = 1) -> dict[str, Any]:
    """In the job: SLURM (and submitit's local executor) set CUDA_VISIBLE_DEVICES to the
    job's GPUs, so a GPU step's device is plain ``cuda``. torch runs ``cpus`` threads, the
    job's cpus-per-task (SLURM sets no OMP_NUM_THREADS, and torch would otherwise start a
    thread per core of the node, oversubscribing the CPUs the job was given)."""
    from weightlab.executors.step import run_step

    return run_step(spec, run_dir, device="cuda" if gpus else None, threads=cpus)


class SlurmExecutor(Executor):
    """Steps as SLURM jobs (job arrays) submitted with submitit.

    A job that SLURM kills (time limit, node failure, pre-emption, out of memory) comes back as
    a lost worker: :func:`weightlab.executors.run_graph` submits it again (``retries``), and
    the steps already finished are not redone.

    Example::

        weightlab run study.toml --executor slurm --param partition=gpu --param gpus=1 \\
            --param time=120 --param "setup=source $PWD/.venv/bin/activate"
    """

    name = "slurm"
    summary = "Steps as SLURM job arrays via submitit (partition, time, GPUs)"
    Params = SlurmParams

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self._executors: dict[str, Any] = {}
        self._pending: list[tuple[Any, Future]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _executor(self, run_dir: str):
        import submitit

        folder = self.params.folder or str(Path(run_dir) / ".submitit")
        if folder not in self._executors:
            p = self.params
            try:
                ex = submitit.AutoExecutor(folder=folder, cluster=p.cluster)
            except RuntimeError as e:  # no srun/sbatch here
                raise WeightlabError(f"slurm: cluster={p.cluster!r}: {e} (cluster='local' runs "
                                     f"the jobs on this machine)") from None
            values: dict[str, Any] = {"timeout_min": p.time, "gpus_per_node": p.gpus,
                                      "cpus_per_task": p.cpus, "nodes": 1,
                                      "tasks_per_node": 1, "name": "weightlab"}
            if p.mem_gb:
                values["mem_gb"] = p.mem_gb
            if p.cluster == "slurm":
                values["slurm_array_parallelism"] = p.array_parallelism
                values.update({f"slurm_{k}": v for k, v in (("partition", p.partition),
                                                            ("account", p.account),
                                                            ("qos", p.qos)) if v})
                if p.setup:
                    values["slurm_setup"] = list(p.setup)
            elif p.cluster == "local" and p.setup:
                values["local_setup"] = list(p.setup)
            try:
                ex.update_parameters(**values)
            except (AssertionError, ValueError, NameError) as e:
                raise UsageError(f"slurm: submitit refused the parameters ({e})") from None
            self._executors[folder] = ex
        return self._executors[folder]

    def submit(self, spec: dict[str, Any], run_dir: str) -> Future:
        return self.submit_many([spec], run_dir)[0]

    def submit_many(self, specs, run_dir: str) -> list[Future]:
        for s in specs:
            check_spec(s)
        ex = self._executor(run_dir)
        with ex.batch():  # one job array for all the steps that are ready together
            delayed = [ex.submit(_run, s, run_dir, self.params.gpus, self.params.cpus)
                       for s in specs]
        futures = [Future() for _ in specs]
        with self._lock:
            self._pending += list(zip(delayed, futures, strict=True))
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, daemon=True,
                                            name="weightlab-slurm")
            self._thread.start()
        return futures

    def _watch(self) -> None:
        """Complete each future when its job has finished (one thread polls every job)."""
        while not self._stop.is_set():
            with self._lock:
                pending = list(self._pending)
            finished = []
            for job, fut in pending:
                if not job.done():
                    continue
                finished.append((job, fut))
                try:
                    fut.set_result(job.result())
                except Exception as e:  # noqa: BLE001 - run_graph tells failed from lost
                    fut.set_exception(e)
            if finished:
                with self._lock:
                    self._pending = [x for x in self._pending if x not in finished]
            self._stop.wait(self.params.poll)

    def close(self) -> None:
        """Stop watching. Jobs still queued or running are cancelled (their finished steps are
        on disk; a new run continues from them)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for job, fut in self._pending:
                job.cancel(check=False)
                fut.cancel()
            self._pending = []
