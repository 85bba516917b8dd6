"""benchmarks/gpu_session.sh, the script a GPU session runs part by part, works end to end (here
on the CPU at the benchmarks' tiny size, without installing anything)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_session.sh"


def _run(part: str, out: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "SKIP_INSTALL": "1", "BENCH_DEVICE": "cpu",
            "OUT": str(out), **env}
    return subprocess.run(["bash", str(SCRIPT), part], cwd=REPO, env=full, text=True,
                          capture_output=True, timeout=600)


def test_a_training_part_writes_its_json_and_log(tmp_path):
    r = _run("training", tmp_path, BENCH_ARGS="--tiny")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "training.json").read_text())
    assert res["device"] == "cpu" and res["throughput"] and res["pair"]
    assert "(a)" in (tmp_path / "training.log").read_text()
    assert "torch" in (tmp_path / "gpu.txt").read_text()


def test_an_unknown_part_is_refused(tmp_path):
    r = _run("trianing", tmp_path)
    assert r.returncode == 2 and "unknown part 'trianing'" in r.stderr

