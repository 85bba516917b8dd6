"""``weightlab compare``: every matcher × normalizer on the same models, one table."""

from __future__ import annotations

import pytest
from weightlab import testing


@pytest.fixture(scope="module")
def digits_pair():
    return testing.trained("mlp", "digits", epochs=10, model_params={"width": 64, "depth": 2},
                           train={"lr": 0.05})


def test_compare_tabulates_every_combination(cli, digits_pair, tmp_path):
    """Two digits MLPs (2×64, 10 epochs; endpoints 96.7 / 96.7 %), 500 calibration images:
    identity 81.4 %, weight matching 95.3 %, activation matching 94.7 % (barriers 0.59, 0.049,
    0.060); a BatchNorm reset of an MLP is a row with its one-line reason, not a failure."""
    plot = tmp_path / "cmp.png"
    res = cli.json("compare", *map(str, digits_pair), "--matchers", "identity,weight,activation",
                   "--normalizers", "none,reset_bn", "--calibration-samples", "500",
                   "--plot", str(plot))
    rows = {(r["matcher"], r["normalizer"]): r for r in res["rows"]}
    assert len(rows) == 6 and plot.stat().st_size > 10_000
    naive = rows[("identity", "none")]
    for m in ("weight", "activation"):
        r = rows[(m, "none")]
        assert r["top1"] > naive["top1"] + 0.08 and r["barrier"] < naive["barrier"] / 4
        assert r["seconds"] > 0 and r["error"] is None
        assert rows[(m, "reset_bn")]["top1"] is None
        assert "no BatchNorm" in rows[(m, "reset_bn")]["error"]
    mean_loss = sum(e["loss"] for e in res["endpoints"]) / 2
    assert naive["barrier"] == pytest.approx(naive["loss"] - mean_loss)


def test_compare_refuses_an_unknown_matcher_before_loading(cli, digits_pair):
    code, _, err = cli("compare", *map(str, digits_pair), "--matchers", "weight,wieght")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "wieght" in err
