"""Tables printed to a pipe or a file (stdout not a terminal) take their natural width: a
checkpoint path or a summary is never folded mid-name (rich assumed 80 columns)."""

from __future__ import annotations

import shutil

import pytest
from weightlab.catalogue import load_catalogue


@pytest.fixture(autouse=True)
def no_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # an explicit width would still be honoured


def test_piped_tables_keep_long_cells_on_one_line(cli):
    code, out, err = cli("plugins", "available")
    assert code == 0, err
    for entry in load_catalogue():
        assert len(entry["summary"]) > 60  # long enough that 80 columns folded them before
        assert any(entry["summary"] in line for line in out.splitlines()), entry["summary"]


def test_piped_evaluate_prints_the_whole_checkpoint_path(tmp_path, cli, digits_ckpt):
    deep = tmp_path / ("a-rather-long-directory-name-of-an-experiment-" * 3) / "model_1.safetensors"
    deep.parent.mkdir(parents=True)
    shutil.copy(digits_ckpt, deep)
    code, out, err = cli("evaluate", deep, "--device", "cpu")
    assert code == 0, err
    assert len(str(deep)) > 150
    assert any(str(deep) in line for line in out.splitlines()), out
