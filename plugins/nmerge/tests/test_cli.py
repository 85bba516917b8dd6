"""``weightlab merge`` of four models with mergemany / c2m3 and ``weightlab compare`` rows, in
process, on four digits MLPs (2×64, 10 epochs, lr 0.05, seeds 0–3; cached)."""

from __future__ import annotations

import json

import pytest
from weightlab import testing
from weightlab_cli.testing import CLI


@pytest.fixture(scope="module")
def digits4():
    return testing.trained("mlp", "digits", models=4, epochs=10,
                           model_params={"width": 64, "depth": 2}, train={"lr": 0.05})


def run(capsys, *argv):
    return CLI(capsys)(*argv)


def _merged_top1(capsys, paths, matcher, out):
    code, stdout, err = run(capsys, "merge", *paths, "--matcher", matcher, "-o", out, "--json")
    assert code == 0, err
    res = json.loads(stdout)
    rows = res["evaluation"]
    assert len(rows) == 5 and rows[-1]["model"] == f"merged → {out}"
    if matcher != "identity":  # the matcher's report on each alignment: cycle-consistent
        assert [a["model"] for a in res["alignment"]] == [1, 2, 3, 4]
        assert {a["matcher"] for a in res["alignment"]} == {matcher}
        assert all(a["cycle_error"] == 0 for a in res["alignment"])
    return rows[-1]["top1"]


@pytest.mark.parametrize("matcher", ["mergemany", "c2m3"])
def test_merge_four_models_writes_a_checkpoint_far_above_naive(digits4, tmp_path, capsys,
                                                                matcher):
    """Endpoints 96.67 / 96.67 / 96.11 / 95.83 % on the 360 test images. Measured merged
    top-1: naive 41.11 %, mergemany 92.22 % (loss 0.257), c2m3 91.94 % (loss 0.283).
    Asserted: 40 points above naive, and ``weightlab evaluate`` of the written checkpoint
    gives the same top-1."""
    naive = _merged_top1(capsys, digits4, "identity", tmp_path / "naive.safetensors")
    out = tmp_path / f"{matcher}.safetensors"
    top1 = _merged_top1(capsys, digits4, matcher, out)
    assert top1 > naive + 0.40
    code, stdout, err = run(capsys, "evaluate", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)[0]["top1"] == pytest.approx(top1)


def test_compare_three_models_lists_the_n_model_matchers(digits4, capsys):
    """Three of the models (endpoints 96.67 / 96.67 / 96.11 %). Measured rows: identity
    51.67 %, weight (each aligned to the first) 93.33 %, mergemany 92.78 %, c2m3 93.61 %.
    Asserted: every aligned row 35 points above identity, without an error."""
    code, stdout, err = run(capsys, "compare", *digits4[:3], "--matchers",
                            "identity,weight,mergemany,c2m3", "--json")
    assert code == 0, err
    rows = {r["matcher"]: r for r in json.loads(stdout)["rows"]}
    assert list(rows) == ["identity", "weight", "mergemany", "c2m3"]
    for name in ("weight", "mergemany", "c2m3"):
        assert rows[name]["error"] is None
        assert rows[name]["top1"] > rows["identity"]["top1"] + 0.35


def test_c2m3_refuses_an_unknown_start_in_one_line(digits4, tmp_path, capsys):
    code, _, err = run(capsys, "merge", *digits4, "--matcher", "c2m3", "--matcher-param",
                       "init=sinkhorn", "-o", tmp_path / "x.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "init" in err and "sinkhorn" in err
