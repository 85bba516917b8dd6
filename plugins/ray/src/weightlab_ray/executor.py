"""The ``ray`` executor: each step is a Ray task with its CPU/GPU resources, on the cluster at
``address`` (``ray start --head`` prints it). Every task runs
:func:`weightlab.executors.step.run_step`, so results are the same files as with ``local``;
the run directory must be on a file system every node sees, and every node needs the same
Python environment (weightlab and its plugins installed)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from weightlab.components import Executor
from weightlab.errors import WeightlabError
from weightlab.executors.spec import check_spec
from weightlab.params import param


@dataclass
class RayParams:
    address: str = param("", "cluster address host:port (printed by 'ray start --head'); "
                             "empty: $RAY_ADDRESS, else a private cluster on this machine")
    cpus: float = param(1.0, "CPUs per step (a step's own resources.cpus wins)", min=0.0)
    gpus: float = param(0.0, "GPUs per step (a step's own resources.gpus wins)", min=0.0)
    namespace: str = param("weightlab", "Ray namespace of this driver")


def _run(spec: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """In the Ray worker: a GPU task sees only its assigned GPUs (Ray sets
    CUDA_VISIBLE_DEVICES), so its device is plain ``cuda``."""
    import ray
    from weightlab.executors.step import run_step

    return run_step(spec, run_dir, device="cuda" if ray.get_gpu_ids() else None)


class RayExecutor(Executor):
    """Steps as Ray tasks. Connects to ``address`` on first use (``ray.init``) and disconnects
    on ``close`` (the cluster keeps running). Ray's own task retries are off: a task whose
    worker died comes back as lost and :func:`weightlab.executors.run_graph` decides.

    Example::

        ray start --head --port 6379 --num-cpus 8 --num-gpus 2      # on the head node
        weightlab run study.toml --executor ray --param address=HEAD:6379 --param gpus=1
    """

    name = "ray"
    summary = "Steps as tasks with CPU/GPU resources on a Ray cluster"
    Params = RayParams

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self._connected = False
        self._remote = None
        self._lock = threading.Lock()  # start()'s thread and submit() may both connect
        self._starting: threading.Thread | None = None

    def start(self) -> None:
        """Connect and warm the cluster's workers in a background thread: one warm-up task
        per CPU slot the steps would use (at most 8), each importing torch, weightlab and the
        plugins, so the first steps find warm workers. An error is raised by the first
        ``submit`` instead (the same connection is tried again there)."""
        if self._starting is None and self._remote is None:
            self._starting = threading.Thread(target=self._warm_up, daemon=True,
                                              name="weightlab-ray-start")
            self._starting.start()

    def _warm_up(self) -> None:
        try:
            self._connect()
            import ray

            slots = int(ray.available_resources().get("CPU", 1) // max(self.params.cpus, 1e-3))
            from weightlab.executors.step import warm as warm_fn

            # the imports every step pays first, once per worker process (Ray reuses it)
            warm = ray.remote(warm_fn).options(num_cpus=self.params.cpus, max_retries=0)
            for _ in range(max(1, min(slots, 8))):
                warm.remote()  # not awaited: the steps queue behind them on the same workers
        except Exception:  # noqa: BLE001 - submit() connects again and reports the error
            pass

    def _connect(self):
        import ray

        with self._lock:
            if self._remote is None:
                if not ray.is_initialized():
                    try:
                        ray.init(address=self.params.address or None,
                                 namespace=self.params.namespace, log_to_driver=False,
                                 configure_logging=False)
                    except (ConnectionError, RuntimeError, ValueError) as e:
                        raise WeightlabError(f"ray: cannot connect to address="
                                             f"{self.params.address!r} ({e})") from None
                    self._connected = True
                self._remote = ray.remote(_run)
            return self._remote

    def submit(self, spec: dict[str, Any], run_dir: str) -> Future:
        check_spec(spec)
        if self._starting is not None:  # the warm-up tasks queue first, on every slot
            self._starting.join()
        res = spec.get("resources") or {}
        task = self._connect().options(num_cpus=res.get("cpus", self.params.cpus),
                                       num_gpus=res.get("gpus", self.params.gpus),
                                       max_retries=0, name=spec["id"])
        return task.remote(spec, run_dir).future()

    def close(self) -> None:
        if self._starting is not None:
            self._starting.join()  # never shut down under a connection being made
            self._starting = None
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False
        self._remote = None
