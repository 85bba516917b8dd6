"""Fan-out speed: K independent trainings (digits MLPs, one torch thread each) then one
evaluation, as a graph through each executor — in this process one after another, ``local``
with K worker processes, ``ray`` on a private 127.0.0.1 head with K CPUs, ``slurm`` with
submitit's local executor. Every executor must give the same tensors (checked on the
checkpoints' SHA-256); the wall time is what differs.

    python -m benchmarks.bench_executors [--models K] [--epochs E] [--engines local,ray,slurm]

A worker process pays a Python + torch import before its first step, so fan-out gains only
when a step lasts longer than that and there are cores for the steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def graph(rd: Path, k: int, epochs: int) -> tuple[list[dict], dict]:
    names = [f"m{i}" for i in range(k)]
    specs = [{"id": f"train_{n}", "call": "weightlab.executors.tasks:train",
              "kwargs": {"model": "mlp", "data": "digits", "out_dir": str(rd / n),
                         "epochs": epochs, "seed": i, "model_params": {"width": 256}},
              "out": f"steps/train_{n}.json", "resources": {"cpus": 1}}
             for i, n in enumerate(names)]
    specs.append({"id": "evaluate", "call": "weightlab.executors.tasks:evaluate_average",
                  "kwargs": {"checkpoints": [str(rd / n / "model_1.safetensors")
                                             for n in names], "data": "digits"},
                  "out": "steps/evaluate.json", "resources": {"cpus": 1}})
    return specs, {"evaluate": [f"train_{n}" for n in names]}


def run(engine: str, k: int, epochs: int) -> tuple[float, list[str]]:
    from weightlab.executors import run_graph

    with tempfile.TemporaryDirectory() as tmp:
        rd = Path(tmp)
        specs, deps = graph(rd, k, epochs)
        t0 = time.perf_counter()
        if engine == "inprocess":
            res = run_graph(specs, deps, None, rd, log=lambda m: None)
        elif engine == "local":
            from weightlab.executors.local import LocalExecutor

            with LocalExecutor(workers=k) as ex:
                res = run_graph(specs, deps, ex, rd, log=lambda m: None)
        elif engine == "ray":
            from weightlab.executors.cluster import local_ray_head
            from weightlab_ray.executor import RayExecutor

            with local_ray_head(num_cpus=k) as address:
                t0 = time.perf_counter()  # the cluster's start-up is not the graph's time
                with RayExecutor(address=address) as ex:
                    res = run_graph(specs, deps, ex, rd, log=lambda m: None)
                seconds = time.perf_counter() - t0
            return seconds, [res[s["id"]]["result"]["sha256"] for s in specs[:-1]]
        else:
            from weightlab_slurm.executor import SlurmExecutor

            with SlurmExecutor(cluster="local", poll=0.1) as ex:
                res = run_graph(specs, deps, ex, rd, log=lambda m: None)
        seconds = time.perf_counter() - t0
        return seconds, [res[s["id"]]["result"]["sha256"] for s in specs[:-1]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--engines", default="inprocess,local,ray,slurm")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(f"{args.models} × digits MLP (width 256) × {args.epochs} epochs, then evaluation; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    ref = None
    for engine in args.engines.split(","):
        seconds, digests = run(engine, args.models, args.epochs)
        ref = ref or digests
        print(f"{engine:10s} {seconds:7.1f} s   same tensors as in process: {digests == ref}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
