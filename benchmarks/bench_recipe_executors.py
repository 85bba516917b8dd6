"""A whole recipe as a user runs it: ``weightlab run RECIPE --quick`` one step after another in
one process, against the same command with ``--executor ray`` on a Ray head started
beforehand on this machine (``ray start --head`` with N CPUs; its start-up is not timed, as a
cluster is running before a user submits to it). Each run is a fresh CLI process timed from
start to exit, in a fresh run directory; runs alternate so that a change of load hits both.
Correctness first: every run's report rows must equal the first sequential run's — exactly
by default; with ``--tolerance T`` numbers may differ by T (a longer training's last bits depend
on the torch thread count: one per Ray task, two in the sequential run), and the largest
difference is printed.

    python -m benchmarks.bench_recipe_executors [--recipe recipes/merge_pairs.toml]
                                                [--repeats 3] [--cpus 2] [--tolerance 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(recipe: str, out: Path, extra: list[str]) -> tuple[float, list]:
    cmd = [sys.executable, "-m", "weightlab_cli.main", "run", recipe, "--quick", "--out",
           str(out), "--json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout)
    return seconds, [r["rows"] for r in res["reports"]]


def difference(rows: list, ref: list) -> float:
    """The largest absolute difference between two reports' numbers (inf when their shapes or
    texts differ)."""
    if isinstance(rows, list) and isinstance(ref, list):
        if len(rows) != len(ref):
            return float("inf")
        return max((difference(a, b) for a, b in zip(rows, ref, strict=True)), default=0.0)
    if isinstance(rows, int | float) and isinstance(ref, int | float):
        return abs(float(rows) - float(ref))
    return 0.0 if rows == ref else float("inf")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="recipes/merge_pairs.toml")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.0)
    args = ap.parse_args(argv)
    from weightlab.executors.cluster import local_ray_head

    print(f"{args.recipe} --quick; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    times: dict[str, list[float]] = {"sequential": [], "ray": []}
    ref = None
    with local_ray_head(num_cpus=args.cpus) as address, \
            tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, extra in (("sequential", []),
                                ("ray", ["--executor", "ray", "--param", f"address={address}"])):
                seconds, rows = run_once(args.recipe, Path(tmp) / f"{name}{i}", extra)
                ref = ref if ref is not None else rows
                diff = difference(rows, ref)
                if diff > args.tolerance:
                    raise SystemExit(f"{name} run {i}: the report differs from the first run's "
                                     f"by {diff:g} (tolerance {args.tolerance:g})")
                times[name].append(seconds)
                print(f"  {name:10s} run {i + 1}: {seconds:6.1f} s   report equal: "
                      f"{'True' if diff == 0 else f'within {diff:.3g}'}")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median: sequential {med['sequential']:.1f} s, ray ({args.cpus} CPUs) "
          f"{med['ray']:.1f} s, ratio ray/sequential {med['ray'] / med['sequential']:.2f}; "
          f"load after {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
