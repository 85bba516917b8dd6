"""Errors that explain: a component of a disabled plugin says the plugin is disabled and by
what, a misspelled name in WEIGHTLAB_DISABLE_PLUGINS is warned about, a run directory given as
a checkpoint lists its checkpoints; every pyproject declares its licence as an SPDX string."""

from __future__ import annotations

import shutil
import tomllib

import pytest
from weightlab import plugins, testing


def test_a_component_of_a_disabled_plugin_says_so(fresh_plugins, monkeypatch, cli):
    monkeypatch.setenv(plugins.DISABLE_ENV, "zipit")
    code, _, err = cli("show", "matchers", "zipit")
    assert code == 2
    assert "unknown matcher 'zipit'" in err
    assert "plugin 'zipit' (matchers) is disabled by WEIGHTLAB_DISABLE_PLUGINS=zipit" in err
    # a kind the disabled plugin does not provide is not blamed on it
    code, _, err = cli("show", "normalizers", "nonexistent")
    assert code == 2 and "disabled" not in err


def test_unknown_names_in_the_disable_variable_are_warned_about(fresh_plugins, monkeypatch,
                                                                 cli):
    monkeypatch.setenv(plugins.DISABLE_ENV, "zipit,repar")
    with pytest.warns(plugins.PluginWarning, match=r"no installed plugin 'repar' \(did you "
                                                   r"mean 'repair'\?\)"):
        state = plugins.load()
    assert state.plugins["zipit"].status == "disabled"
    assert state.plugins["repair"].status == "ok"  # the misspelling disabled nothing
    plugins.set_state(None)
    code, out, err = cli("list", "matchers")
    assert code == 0 and "warning: WEIGHTLAB_DISABLE_PLUGINS names no installed plugin " \
                         "'repar'" in err


def test_a_run_directory_lists_its_checkpoints(tmp_path, cli, digits_ckpt):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model_1.safetensors", "model_2.safetensors"):
        shutil.copy(digits_ckpt, run / name)
    (run / "metrics.jsonl").write_text("")
    code, _, err = cli("evaluate", run, "--device", "cpu")
    assert code == 1
    assert err.strip() == (f"error: {run} is a directory, not a checkpoint; its checkpoints: "
                           f"model_1.safetensors, model_2.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("evaluate", empty, "--device", "cpu")
    assert code == 1 and "is a directory with no checkpoint (*.safetensors) in it" in err


def test_every_pyproject_has_an_spdx_licence_string():
    repo = testing.REPO
    paths = [repo / "pyproject.toml", *sorted(repo.glob("plugins/*/pyproject.toml")),
             *sorted(repo.glob("examples/*/pyproject.toml"))]
    assert len(paths) >= 5
    for path in paths:
        data = tomllib.loads(path.read_text())
        assert isinstance(data["project"].get("license"), str), f"{path}: license is not a string"
        # PEP 639 license expressions need setuptools 77
        assert "setuptools>=77" in data["build-system"]["requires"], path
