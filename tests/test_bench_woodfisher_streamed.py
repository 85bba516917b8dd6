"""The WoodFisher benchmark's streamed parts: resident and streamed runs agree before any time
is reported, and ``--plan`` shows a ResNet-50 / B = 2000 run's streamed plan without computing
it (what ``--model resnet50 --block-size 2000 --device cuda`` runs on a GPU)."""

import json
import subprocess
import sys

from weightlab import testing


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.bench_woodfisher", "--threads", "1",
                           *args], cwd=testing.REPO, capture_output=True, text=True,
                          timeout=300)


def test_streamed_part_agrees_with_resident_first(tmp_path):
    """ResNet-8, N = 16, B = 32, 3 groups: 0 masks differ and max |Δw| = 0.0 (measured, CPU);
    6 gradient passes against 1."""
    out = tmp_path / "wf.json"
    proc = _bench("--quick", "--parts", "streamed", "--samples", "16", "--block-size", "32",
                  "--groups", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["mask_mismatch"] == 0 and row["weights_max_abs_diff"] <= 1e-7
    assert row["streamed"]["plan"]["groups"] == 3 and row["streamed"]["gradient_passes"] == 6
    assert row["resident"]["gradient_passes"] == 1
    assert "0 masks differ" in proc.stdout


def test_plan_of_resnet50_with_blocks_of_2000():
    """Under 2 GiB in float32: 175.36 GiB of blocks → 182 groups, 364 gradient passes."""
    proc = _bench("--model", "resnet50", "--block-size", "2000", "--samples", "8",
                  "--memory-budget-gb", "2", "--precision", "float32", "--plan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "11,768 blocks of 2000 (175.36 GiB)" in proc.stdout
    assert "streamed: 182 groups" in proc.stdout and "364 gradient passes" in proc.stdout
    assert "pass 1" not in proc.stderr  # nothing computed
