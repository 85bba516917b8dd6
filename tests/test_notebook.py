"""docs/examples/merge_and_repair.ipynb runs end to end through ``import weightlab`` (nbclient,
a real kernel) and its own assertions hold: the outcomes the CLI tests check (naive < weight ≤
weight + REPAIR at the midpoint, REPAIR shrinks the barrier, the naive merge's E_ℓ vanishes,
re-normalization after pruning does not hurt).

Measured on this 2-core CPU (seeds 0, 1; 30 epochs on digits): endpoints 98.33% / 98.06%,
midpoints naive 87.78%, weight 96.67%, weight + REPAIR 97.50% (the demo's figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "merge_and_repair.ipynb"


@pytest.mark.slow
def test_the_python_api_notebook_runs(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("WEIGHTLAB_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "weight + REPAIR" in outputs and "sparsity" in outputs
    assert (tmp_path / "out" / "pair" / "model_1.safetensors").is_file()
