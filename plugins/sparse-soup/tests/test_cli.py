"""``weightlab sms`` and ``weightlab soup`` end to end on the digits data (tiny)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def sms_run(tmp_path_factory, digits_mlp):
    """Two phases to 50% sparsity, 2 ingredients, ALLR, greedy soup on 300 held-out images."""
    from weightlab_cli.main import main

    run = tmp_path_factory.mktemp("sms") / "run"
    code = main(["sms", str(digits_mlp), "--goal-sparsity", "0.5", "--phases", "2",
                 "--ingredients", "2", "--retrain-epochs", "1", "--schedule", "ALLR",
                 "--ensemble", "greedy", "--heldout", "300", "--bn-samples", "200",
                 "--out", str(run), "--json"])
    assert code == 0
    return run


def test_sms_cli_json_and_run_directory(sms_run, cli):
    # the run is complete: a rerun resumes, skips every step, and prints the summary
    code, out, err = cli("sms", _ckpt(sms_run), "--goal-sparsity", "0.5", "--phases", "2",
                         "--ingredients", "2", "--retrain-epochs", "1", "--schedule", "ALLR",
                         "--ensemble", "greedy", "--heldout", "300", "--bn-samples", "200",
                         "--out", sms_run, "--json")
    assert code == 0, err
    assert "continuing" in err and "phase_2/ingredient_2: finished earlier, skipped" in err
    summary = json.loads(out)
    assert [(r["phase"], r["model"]) for r in summary["rows"]][:5] == [
        (1, "soup"), (1, "best ingredient"), (1, "mean ingredient"), (1, "IMP"), (1, "ensemble")]
    by = {(r["phase"], r["model"]): r for r in summary["rows"]}
    assert by[(1, "soup")]["sparsity"] == pytest.approx(1 - 0.5 ** 0.5, abs=1e-3)
    assert by[(2, "soup")]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    # the greedy soup never loses held-out accuracy to its best ingredient
    for i in (1, 2):
        phase = summary["phases"][i - 1]
        best_held = max(g["heldout"]["top1"] for g in phase["ingredients"])
        assert phase["soup"]["heldout"]["top1"] >= best_held
        assert by[(i, "ensemble")]["flops"] == 2 * by[(i, "soup")]["flops"]
    assert (sms_run / "summary.png").is_file() and (sms_run / "phase_2/soup.safetensors").is_file()
    assert summary["phases"][0]["ingredients"][0]["train"]["schedule"] == "linear"  # ALLR


def _ckpt(run):
    return json.loads((run / "sms.json").read_text())["config"]["checkpoint"]


def test_sms_cli_table_and_usage_errors(sms_run, cli):
    code, out, err = cli("sms", _ckpt(sms_run), "--goal-sparsity", "0.5", "--phases", "2",
                         "--ingredients", "2", "--retrain-epochs", "1", "--schedule", "ALLR",
                         "--ensemble", "greedy", "--heldout", "300", "--bn-samples", "200",
                         "--out", sms_run, "--phase", "2")
    assert code == 0, err
    assert "best ingr." in out and "IMP" in out
    code, _, err = cli("sms", _ckpt(sms_run), "--schedule", "XLR", "--out", sms_run)
    assert code == 2 and "XLR" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("sms", _ckpt(sms_run), "--out", sms_run)
    assert code == 2 and "sms.json" in err and "--force" in err


def test_soup_cli_on_ingredients_trained_elsewhere(sms_run, cli, tmp_path):
    a = sms_run / "phase_1/ingredient_1/model_1.safetensors"
    b = sms_run / "phase_1/ingredient_2/model_1.safetensors"
    out = tmp_path / "soup.safetensors"
    res = cli.json("soup", a, b, "--method", "uniform", "--data", "digits", "-o", out)
    assert res["chosen"] == [1, 2] and out.is_file()
    models = [r["model"] for r in res["rows"]]
    assert models == [str(a), str(b), "logit ensemble", "uniform soup"]
    assert res["rows"][-1]["sparsity"] == pytest.approx(res["rows"][0]["sparsity"])
    assert res["sparsity"] == pytest.approx(1 - 0.5 ** 0.5, abs=1e-3)
    code, _, err = cli("soup", a, b, "-o", out)
    assert code == 2 and "--force" in err
    greedy = cli.json("soup", a, b, "--method", "greedy", "--heldout", "300", "-o", out,
                      "--force")
    held = [r["heldout"]["top1"] for r in greedy["rows"]]
    assert held[-1] >= max(held[:2])
    # an ingredient of phase 2 has a sparser mask: refused, naming the first differing layer
    later = sms_run / "phase_2/ingredient_1/model_1.safetensors"
    code, _, err = cli("soup", a, later, "-o", tmp_path / "bad.safetensors")
    assert code == 1 and "masks differ at layer 'layers." in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("soup", a, b, "--method", "greedy", "-o", tmp_path / "g.safetensors")
    assert code == 2 and "--heldout" in err


def test_disabling_the_plugin_removes_its_commands():
    """The commands come from the plugin (weightlab_register_commands): disabled, it adds
    none, and asking for one is click's "no such command" usage error."""
    env = {**os.environ, "WEIGHTLAB_DISABLE_PLUGINS": "sparse-soup"}
    bin_ = Path(sys.executable).parent / "weightlab"
    shown = subprocess.run([str(bin_), "--help"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0
    commands = [line.split()[1] for line in shown.stdout.splitlines()
                if line.startswith("│ ") and len(line.split()) > 1]
    assert "merge" in commands and "soup" not in commands and "sms" not in commands
    done = subprocess.run([str(bin_), "sms", "x"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "No such command 'sms'" in done.stderr


def test_soup_cli_on_dense_models_from_training(cli, tmp_path):
    """Dense digits MLPs as ``weightlab train --models 2`` writes them (4 epochs, lr 0.05).
    Measured test top-1 / loss: same init: 89.72% / 0.6007 and 88.89% / 0.6003, uniform soup
    89.17% / 0.5974 (lower loss than either); different inits: 89.72% and 87.22%, soup 63.61%
    / 1.713 (no shared basin), while their logit ensemble gets 90.83%."""
    from weightlab import testing

    def soup(same_init: bool) -> list[dict]:
        paths = testing.trained("mlp", "digits", models=2, epochs=4, train={"lr": 0.05},
                                model_params={"width": 64, "depth": 2}, same_init=same_init)
        return cli.json("soup", *paths, "--data", "digits", "-o", tmp_path / f"{same_init}.st",
                        "--force")["rows"]

    a, b, _, s = soup(True)
    assert s["test"]["loss"] < min(a["test"]["loss"], b["test"]["loss"])
    assert s["test"]["top1"] > min(a["test"]["top1"], b["test"]["top1"])
    a, b, ens, s = soup(False)
    assert s["test"]["top1"] < min(a["test"]["top1"], b["test"]["top1"]) - 0.1
    assert ens["test"]["top1"] > s["test"]["top1"] + 0.1


def test_original_recipe_is_checked_before_any_work_and_takes_the_comma_form(tmp_path, cli,
                                                                            digits_mlp):
    """An imported checkpoint records no training recipe: `sms` says so at once (exit 2,
    nothing written; before: after pruning had already run), and the form its message suggests,
    --original lr=…,epochs=…, is accepted (before: only the repeated form parsed)."""
    import torch
    from weightlab.checkpoint import load_model, read_header
    from weightlab.importer import import_state_dict
    from weightlab.params import split_assignments

    net, _ = load_model(digits_mlp)
    src = tmp_path / "plain.pt"
    torch.save(net.state_dict(), src)
    head = read_header(digits_mlp)
    bare = tmp_path / "imported.safetensors"
    import_state_dict(src, head["model"]["name"], "digits", bare,
                      model_params=head["model"]["params"])
    code, _, err = cli("sms", bare, "--out", tmp_path / "run")
    assert code == 2 and "pass --original lr=…,epochs=…" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    code, _, err = cli("sms", bare, "--original", "lr=0.1,epochs=zero", "--out", tmp_path / "run")
    assert code == 2 and "original.epochs" in err and not (tmp_path / "run").exists()
    assert split_assignments(["lr=0.1,epochs=3", "milestones=10,20"]) == [
        "lr=0.1", "epochs=3", "milestones=10,20"]
