"""``weightlab run``: a recipe is validated completely before any work (every problem with its
file and line), runs its steps through the in-process CLI, feeds outputs forward by name, and
does not redo finished steps on a re-run. Steps train tiny MLPs on digits (seconds)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from weightlab.recipes.lines import key_lines

PIPELINE = """
title = "tiny pipeline"

[vars]
epochs = 2
width = 32

[[step]]
name = "pair"
do = "train"
model = "mlp"
data = "digits"
pair = true
epochs = "${vars.epochs}"
lr = 0.05
param = { width = "${vars.width}", depth = 2 }

[[step]]
name = "merge"
do = "merge"
checkpoints = ["${pair.model_1}", "${pair.model_2}"]

[step.matrix]
matcher = ["identity", "weight"]

[[step]]
name = "check"
do = "evaluate"
checkpoints = ["${merge[weight].out}"]

[[report]]
title = "midpoint"
each = "merge"
columns = ["matcher", "A", "merged"]
row = ["${each.matcher}", "${each.result.evaluation.0.top1}", "${each.result.evaluation.-1.top1}"]
formats = ["", "pct", "pct"]
plot = { file = "midpoint.png", kind = "bar", y = ["A", "merged"], label = "matcher" }

[quick.vars]
epochs = 1
"""


def _write(tmp_path, text, name="recipe.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_key_lines_follow_tables_and_skip_multiline_values():
    text = 'a = 1\n[[step]]\nname = "x"\nlist = [\n  "q = 1",\n]\n[step.matrix]\nm = [1]\n' \
           '[[step]]\n"do" = "y"\n[quick.x]\nepochs = 1\n'
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("step", 0, "name")] == 3
    assert lines[("step", 0, "list")] == 4 and ("step", 0, "q") not in lines
    assert lines[("step", 0, "matrix", "m")] == 8 and lines[("step", 1, "do")] == 10
    assert lines[("quick", "x", "epochs")] == 12


def test_every_problem_is_reported_with_its_line_before_any_work(tmp_path, cli):
    path = _write(tmp_path, """\
        title = "broken"
        colour = "red"
        [vars]
        epochs = 2
        [[step]]
        name = "pair"
        do = "train"
        model = "mlp"
        data = "digitz"
        pair = "yes"
        epochs = "${vars.epoch}"
        lr = -1.0
        param = { width = 0, depht = 2 }
        train_param = { schedule = "cosin" }
        [[step]]
        name = "merge"
        do = "merge"
        checkpoints = ["${pair.model_3}", "${later.out}"]
        wieghts = "1,2"
        json = true
        matcher_param = { max_iter = 0 }
        [step.matrix]
        matcher = ["identity", "wieght"]
        normalizer = ["repiar"]
        [[step]]
        name = "later"
        do = "mrege"
        [[report]]
        title = "t"
        each = "merg"
        columns = ["a"]
        row = ["x", "y"]
        [quick.pari]
        epochs = 1
        """)
    run_dir = tmp_path / "run"
    code, out, err = cli("run", path, "--out", run_dir)
    assert code == 2
    expected = {
        2: "unknown top-level key 'colour'",
        9: "unknown dataset 'digitz'",
        10: "pair = 'yes': expected true or false",
        11: "no variable 'epoch' in [vars] (did you mean 'epochs'?)",
        12: "train.lr: -1.0 must be >= 0.0",
        13: "mlp.width: 0 must be >= 1",
        14: "'cosin' is not one of",
        18: "step 'pair' has no output 'model_3'",
        19: "unknown option 'wieghts' (did you mean 'weights'?)",
        20: "unknown option 'json'",
        23: "unknown matcher 'wieght'; did you mean 'weight'?",
        24: "unknown normalizer 'repiar'; did you mean 'repair'?",
        27: "'mrege' is not an operation (did you mean 'merge'?)",
        30: "each = 'merg': no such step",
        32: "row 1 has 2 cells for 1 columns",
        33: "[quick.pari]: no step named 'pari'",
    }
    for line, text in expected.items():
        assert f"{path}:{line}: " in err and text in err, (line, text, err)
        assert any(ln.strip().startswith(f"{path}:{line}: ") and text in ln
                   for ln in err.splitlines()), (line, text)
    assert "depht" in err and "later' comes later" in err
    assert not run_dir.exists()  # nothing ran, nothing was written


def test_a_recipe_runs_feeds_outputs_forward_and_reports(tmp_path, cli):
    path = _write(tmp_path, PIPELINE)
    run_dir = tmp_path / "run"
    res = cli.json("run", path, "--quick", "--out", run_dir)
    assert [s["name"] for s in res["steps"]] == ["pair", "merge[identity]", "merge[weight]",
                                                 "check"]
    assert all(s["ran"] for s in res["steps"])
    merged = json.loads((run_dir / "merge-weight" / "result.json").read_text())
    table = res["reports"][0]
    assert [r[0] for r in table["rows"]] == ["identity", "weight"]
    assert table["rows"][1][2] == merged["evaluation"][-1]["top1"]
    checked = json.loads((run_dir / "check" / "result.json").read_text())
    assert checked[0]["checkpoint"] == str(run_dir / "merge-weight" / "merge.safetensors")
    assert checked[0]["top1"] == pytest.approx(merged["evaluation"][-1]["top1"])
    record = run_dir / "recipe-recipe"
    resolved = json.loads((record / "resolved.json").read_text())
    assert resolved["vars"]["epochs"] == 1  # [quick.vars] applied
    assert resolved["steps"][0]["options"]["epochs"] == 1
    versions = json.loads((record / "versions.json").read_text())
    assert versions["weightlab"] and "builtin" in versions["plugins"]
    assert (record / "midpoint.png").stat().st_size > 1000
    assert "| weight |" in (record / "report.md").read_text()
    assert (record / "recipe.toml").read_text() == path.read_text()


def test_finished_steps_are_not_redone_and_changes_redo_what_depends_on_them(tmp_path, cli):
    path = _write(tmp_path, PIPELINE)
    run_dir = tmp_path / "run"
    cli.json("run", path, "--quick", "--out", run_dir)
    model = run_dir / "pair" / "model_1.safetensors"
    stamp = model.stat().st_mtime_ns

    again = cli.json("run", path, "--quick", "--out", run_dir)
    assert not any(s["ran"] for s in again["steps"])
    assert model.stat().st_mtime_ns == stamp
    assert again["reports"][0]["rows"]  # reports are rebuilt from the saved results

    # changing the last step redoes only it
    path.write_text(path.read_text().replace('checkpoints = ["${merge[weight].out}"]',
                                             'checkpoints = ["${merge[weight].out}"]\n'
                                             'batch_size = 500'))
    ran = {s["name"]: s["ran"] for s in cli.json("run", path, "--quick", "--out",
                                                  run_dir)["steps"]}
    assert ran == {"pair": False, "merge[identity]": False, "merge[weight]": False,
                   "check": True}

    # changing the first step redoes everything downstream
    path.write_text(path.read_text().replace("lr = 0.05", "lr = 0.04"))
    ran = cli.json("run", path, "--quick", "--out", run_dir)["steps"]
    assert all(s["ran"] for s in ran)
    assert model.stat().st_mtime_ns != stamp


def test_a_failed_step_stops_the_run_and_the_rerun_continues_after_the_finished_ones(
        tmp_path, cli):
    path = _write(tmp_path, PIPELINE.replace('do = "evaluate"', 'do = "evaluate"\n'
                                             'split = "heldout"'))
    run_dir = tmp_path / "run"
    code, out, err = cli("run", path, "--quick", "--out", run_dir)
    assert code == 1
    assert "no held-out split" in err and f"{path}:" in err and "step 'check' failed" in err
    state = json.loads((run_dir / "state.json").read_text())
    assert state["steps"]["merge[weight]"]["status"] == "done"
    assert state["steps"]["check"]["status"] == "started"

    path.write_text(path.read_text().replace('split = "heldout"', 'split = "test"'))
    ran = {s["name"]: s["ran"] for s in cli.json("run", path, "--quick", "--out",
                                                  run_dir)["steps"]}
    assert ran == {"pair": False, "merge[identity]": False, "merge[weight]": False,
                   "check": True}


def test_dry_run_shows_each_command_and_runs_nothing(tmp_path, cli):
    path = _write(tmp_path, PIPELINE)
    run_dir = tmp_path / "run"
    code, out, err = cli("run", path, "--dry-run", "--out", run_dir)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("pair: weightlab.operation('train')(") and "epochs=2" in lines[0]
    assert "['<pair.model_1>', '<pair.model_2>']" in lines[1]
    assert "matcher='identity'" in lines[1]
    assert not run_dir.exists()


def test_a_recipe_is_data_not_code(tmp_path, cli):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"""\
        [[step]]
        name = "x"
        do = "flops"
        target = "__import__('pathlib').Path('{marker}').touch()"
        """)
    code, out, err = cli("run", path, "--out", tmp_path / "run")
    assert code != 0 and not marker.exists()


def test_a_training_recipe_name_is_checked(tmp_path, cli):
    path = _write(tmp_path, """\
        [[step]]
        name = "pair"
        do = "train"
        recipe = "vf-cifar10-resnet21"
        pair = true
        """)
    code, out, err = cli("run", path, "--dry-run")
    assert code == 2 and f"{path}:4: " in err and "did you mean" in err and "resnet20" in err


def test_recipes_sharing_a_run_directory_reuse_equal_steps_and_protect_the_rest(tmp_path, cli):
    run_dir = tmp_path / "run"
    one = _write(tmp_path, '[[step]]\nname = "count"\ndo = "flops"\ntarget = "mlp"\n', "one.toml")
    same = _write(tmp_path, '[[step]]\nname = "other"\ndo = "flops"\ntarget = "mlp"\n',
                  "same.toml")
    clash = _write(tmp_path, '[[step]]\nname = "count"\ndo = "flops"\ntarget = "cifar_resnet8"\n',
                   "clash.toml")
    assert cli.json("run", one, "--out", run_dir)["steps"][0]["ran"]
    assert not cli.json("run", same, "--out", run_dir)["steps"][0]["ran"]  # same command line
    code, out, err = cli("run", clash, "--out", run_dir)
    assert code == 1 and "would overwrite the outputs of step 'count'" in err


def test_twin_steps_submitted_together_run_once_on_an_executor(tmp_path, cli):
    """Two steps computing the same thing (the merge_pairs recipe's shared quick stand-in) are
    ready at once on an executor; the second waits for the first and reuses it instead of
    training the same pair twice (before: both ran, the twin's directory was written)."""
    twins = """
    [[step]]
    name = "a"
    do = "train"
    model = "mlp"
    data = "digits"
    epochs = 1
    param = { width = 16, depth = 1 }

    [[step]]
    name = "b"
    do = "train"
    model = "mlp"
    data = "digits"
    epochs = 1
    param = { width = 16, depth = 1 }
    """
    path = _write(tmp_path, twins)
    res = cli.json("run", path, "--out", tmp_path / "run", "--executor", "local")
    ran = {s["name"]: s["ran"] for s in res["steps"]}
    assert ran == {"a": True, "b": False}
    assert res["steps"][1]["outputs"] == res["steps"][0]["outputs"]
    assert not list((tmp_path / "run" / "b").glob("*.safetensors"))  # trained once, in a/


def test_compare_is_a_recipe_step_with_listed_components(tmp_path, cli):
    """``do = "compare"`` runs the comparison as a step (the same operation as ``weightlab
    compare``); its matchers may be a TOML list or a comma string, each validated before any
    work: an unknown one is one problem naming the step's line. Two 2×32 digits MLPs (1 epoch):
    the rows are the matchers in order and the JSON is the step's result."""
    text = PIPELINE.split("[[step]]\nname = \"merge\"")[0] + """
[[step]]
name = "cmp"
do = "compare"
checkpoints = ["${pair.model_1}", "${pair.model_2}"]
matchers = ["identity", "weight"]
calibration_samples = 256
"""
    res = cli.json("run", _write(tmp_path, text), "--quick", "--out", tmp_path / "run")
    rows = json.loads((tmp_path / "run" / "cmp" / "result.json").read_text())["rows"]
    assert [r["matcher"] for r in rows] == ["identity", "weight"]
    assert all(r["error"] is None and 0 < r["top1"] <= 1 for r in rows)
    assert [s["name"] for s in res["steps"]] == ["pair", "cmp"]
    bad = _write(tmp_path, text.replace('"identity", "weight"', '"identity", "wieght"'),
                 "bad.toml")
    code, out, err = cli("run", bad, "--quick", "--out", tmp_path / "bad")
    assert code == 2 and "unknown matcher 'wieght'" in err and "bad.toml:" in err


def test_recipe_driver_keys_checkpoints_without_torch(tmp_path):
    """The runner keys a step on its input checkpoints' tensor digests; it reads them from the
    safetensors header alone, so a driver that only submits steps (``--executor ray``) never
    imports torch (1.5 s of CPU its workers need). Checked in a fresh interpreter: the digest
    equals the one the checkpoint stores, and torch stays unimported."""
    import subprocess
    import sys

    from weightlab import checkpoint, testing

    net = testing.tiny_model("mlp", width=8, depth=2)
    path = tmp_path / "m.safetensors"
    ck = checkpoint.Checkpoint(model={"name": "mlp", "params": {"width": 8, "depth": 2},
                                      "input_shape": [1, 8, 8], "num_classes": 10},
                               state=net.state_dict())
    checkpoint.save(ck, path)
    code = ("import sys, json; from pathlib import Path; import weightlab.recipes; "
            "from weightlab.recipes.cache import file_digest; "
            f"print(json.dumps([file_digest(Path({str(path)!r})), 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    digest, torch_loaded = json.loads(out.stdout)
    assert digest == checkpoint.read_header(path)["sha256"] and not torch_loaded


def test_benchmark_recipes_validate(cli):
    """The recipes under benchmarks/recipes (run by benchmarks/bench_recipe_executors.py, never by
    the suite) stay valid: every step, option and reference checks out at quick size."""
    paths = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "recipes").glob("*.toml"))
    assert paths
    for path in paths:
        code, out, err = cli("run", str(path), "--quick", "--dry-run")
        assert code == 0, (path.name, err)
