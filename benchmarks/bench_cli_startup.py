"""CLI start-up time per command: wall time of a fresh ``weightlab …`` process, and whether it
loaded torch (``-X importtime``: torch's cumulative import time, 0 when it did not load).

Listing, showing and inspecting must stay under 0.5 s and load no torch (the docs promise
cheap listings); ``--help`` loads no plugin at all.

    python -m benchmarks.bench_cli_startup [--repeat 5] [--out FILE]

Each command runs ``--repeat`` times; the table gives the minimum and the median (the minimum is
the figure least disturbed by other processes on a shared machine), and the least CPU time
(user + system) of the process, which a loaded machine disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [
    ["--help"],
    ["list", "models"],
    ["list", "pruners", "--json"],
    ["show", "models", "cifar_resnet20"],
    ["show", "pruners", "woodfisher"],
    ["plugins", "list"],
    ["plugins", "inspect", "repair"],
    ["plugins", "available"],
]


def _weightlab() -> str:
    exe = Path(sys.executable).with_name("weightlab")
    return str(exe) if exe.exists() else "weightlab"


def _torch_import_ms(argv: list[str]) -> float:
    """Cumulative import time of torch in one run of ``argv`` (0.0 when torch did not load)."""
    code = "import sys; from weightlab_cli.main import main; main(sys.argv[1:])"
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv],
                         capture_output=True, text=True).stderr
    m = re.search(r"^import time:\s+\d+ \|\s+(\d+) \| torch$", err, re.M)
    return int(m.group(1)) / 1000 if m else 0.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(argv: list[str], repeat: int) -> dict:
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        subprocess.run([_weightlab(), *argv], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
        cpu.append(_cpu() - c0)
    return {"command": "weightlab " + " ".join(argv), "min_s": min(times),
            "median_s": statistics.median(times), "cpu_min_s": min(cpu),
            "torch_import_ms": _torch_import_ms(argv)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 repeats")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    rows = [measure(c, repeat) for c in COMMANDS]
    print(f"{'command':40} {'min s':>7} {'median s':>9} {'CPU s':>6} {'torch ms':>9}")
    for r in rows:
        print(f"{r['command']:40} {r['min_s']:7.3f} {r['median_s']:9.3f} {r['cpu_min_s']:6.3f} "
              f"{r['torch_import_ms']:9.0f}")
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                        "python": platform.python_version(),
                                        "rows": rows}, indent=2))
    return 0 if all(r["torch_import_ms"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
