"""``weightlab merge … --base BASE --method M``: a task-vector merge written as a checkpoint
with its provenance, a normalizer after it, and one-line errors (exit 2 for usage errors)."""

from __future__ import annotations

import json

import pytest
from weightlab import checkpoint as ckpt_io
from weightlab import testing
from weightlab_cli.testing import CLI


def run(capsys, *argv):
    return CLI(capsys)(*argv)


def test_merge_with_base_writes_a_ties_merge(mnist_ingredients, tmp_path, capsys):
    """TIES (k = 20 %) of the three MNIST ingredients: 97.35 % test top-1 (as through the
    operation); the base is evaluated beside them (96.06 %). With the RESCALE normalizer
    after it (references: the fine-tuned models) measured 97.37 %; bound: ≥ the base."""
    root, base, tuned = mnist_ingredients
    out = tmp_path / "ties.safetensors"
    code, text, err = run(capsys, "merge", *tuned, "--base", base, "--method", "ties",
                          "--param", "density=0.2", "--data-dir", root, "-o", out, "--json")
    assert code == 0, err
    res = json.loads(text)
    rows = res["evaluation"]
    assert rows[-2]["model"] == f"base {base}"
    assert rows[-2]["top1"] == pytest.approx(0.9606, abs=1e-4)
    assert rows[-1]["top1"] == pytest.approx(0.9735, abs=1e-4)
    ck = ckpt_io.load(out)
    assert ck.provenance["base"] == str(base) and ck.provenance["matcher"] is None
    assert ck.provenance["method"] == {"name": "ties", "params": {"density": 0.2,
                                                                  "scaling": 1.0,
                                                                  "scope": "model"}}
    code, text, err = run(capsys, "merge", *tuned, "--base", base, "--method", "ties",
                          "--method-param", "density=0.2", "--normalizer", "rescale",
                          "--data-dir", root, "-o", tmp_path / "n.safetensors", "--json")
    assert code == 0, err
    res = json.loads(text)
    assert res["provenance"]["normalizer"]["name"] == "rescale"
    assert res["evaluation"][-1]["top1"] >= res["evaluation"][-2]["top1"]


def test_merge_with_base_rejects_bad_input_in_one_line(mnist_ingredients, tmp_path, capsys):
    root, base, tuned = mnist_ingredients
    out = tmp_path / "m.safetensors"
    usage = [
        (["--method", "ties"], "needs --base"),
        (["--base", base], "task_arithmetic, ties, dare"),
        (["--base", base, "--method", "tie"], "did you mean 'ties'"),
        (["--base", base, "--method", "ties", "--param", "density=2"], "density"),
        (["--base", base, "--method", "dare", "--param", "p=1"], "must be < 1"),
        (["--base", base, "--method", "slerp"], "merges exactly two models"),
        (["--base", base, "--method", "ties", "--matcher", "weight"], "merged in place"),
    ]
    for extra, needle in usage:
        code, _, err = run(capsys, "merge", *tuned, *extra, "--no-evaluate", "-o", out)
        assert code == 2 and needle in err, (extra, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    other = tmp_path / "other.safetensors"
    net = testing.tiny_model("mlp", (1, 28, 28), depth=2, width=64)
    ckpt_io.save(ckpt_io.from_model(net, ckpt_io.model_info("mlp", {"depth": 2, "width": 64},
                                                             (1, 28, 28), 10)), other)
    # checked before any data is read (no --data-dir here: evaluating would need it)
    code, _, err = run(capsys, "merge", *tuned, "--base", other, "--method", "ties", "-o", out)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert str(other) in err and "'layers.1.weight'" in err and "shape" in err
    assert not out.exists()


def test_a_recipe_merge_step_names_a_merge_method(mnist_ingredients, tmp_path, capsys):
    """In a recipe, merge's ``method`` is a merge method (soup's is an ensemble): validated
    before any work, and the taskvec plugin's code keys the step's cache."""
    from weightlab.recipes import cache, commands

    root, base, tuned = mnist_ingredients
    recipe = tmp_path / "r.toml"
    for method, ok in (("ties", True), ("tie", False)):
        recipe.write_text(f'title = "t"\n[[step]]\nname = "tv"\ndo = "merge"\n'
                          f'checkpoints = {[str(p) for p in tuned]!r}\nbase = "{base}"\n'
                          f'method = "{method}"\nmethod_param = {{ density = 0.5 }}\n'
                          .replace("'", '"'))
        code, _, err = run(capsys, "run", recipe, "--dry-run")
        assert (code == 0) == ok, err
        if not ok:
            assert "unknown merge_method 'tie'" in err and "did you mean 'ties'" in err
    key = cache.code_key(commands.command("merge"), {"method": "ties"})
    assert "taskvec" in key and "sparse-soup" not in key
