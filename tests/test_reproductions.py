"""Every reproduction in recipes/ runs at --quick size (digits, small stand-ins) and prints the
table its paper reports; full sizes validate. The recipes share one run directory, as a user
running them all would: the trained pairs they have in common are trained once."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL = sorted(p.stem for p in RECIPES.glob("*.toml"))


def _run(*argv) -> tuple[int, str]:
    from weightlab_cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([str(a) for a in argv])
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """name → `weightlab run RECIPE --quick --json` output, all into one run directory."""
    run_dir = tmp_path_factory.mktemp("reproductions")
    out = {}
    for name in ALL:
        code, text = _run("run", RECIPES / f"{name}.toml", "--quick", "--out", run_dir, "--json")
        assert code == 0, f"{name} failed at quick size"
        out[name] = json.loads(text)
    return out


def _table(res: dict, title_start: str) -> dict:
    tables = [t for t in res["reports"] if t["title"].startswith(title_start)]
    assert tables, [t["title"] for t in res["reports"]]
    return tables[0]


def _rows(table: dict) -> list[dict]:
    return [dict(zip(table["columns"], r)) for r in table["rows"]]


@pytest.mark.parametrize("name", ALL)
def test_full_size_validates(name):
    code, text = _run("run", RECIPES / f"{name}.toml", "--dry-run", "--json")
    assert code == 0
    steps = json.loads(text)["steps"]
    assert all("quick" not in s["options"] for s in steps)
    trains = [s["options"] for s in steps if s["do"] == "train"]
    # the seed's settings
    assert trains and all(str(t.get("recipe", "")).startswith("vf-cifar10-") for t in trains)


def test_every_recipe_runs_quick_and_reports(quick):
    for name, res in quick.items():
        assert res["reports"], name
        assert not res["warnings"], (name, res["warnings"])
        for t in res["reports"]:
            assert t["rows"], (name, t["title"])
            if t["plot"]:
                assert Path(t["plot"]).stat().st_size > 5000
    trained = [s for res in quick.values() for s in res["steps"] if s["ran"]
               and s["name"] in ("vgg16", "vgg16_bn", "resnet20", "resnet20_ln", "pair", "dense")]
    assert len(trained) == 3  # the MLP, ResNet-8 and ResNet-8-LN pairs, each once


def test_merging_alignment_and_renormalization_recover_the_midpoint(quick):
    """ResNet-8 (BatchNorm) on digits, 1 epoch (endpoints 90.8%, 88.3%): naive midpoint 10.6%,
    weight matching 31.9%, + BN reset 66.1%, + REPAIR 66.7% (measured)."""
    rows = _rows(_table(quick["merge_pairs"], "Midpoint"))
    r8 = {(r["matcher"], r["normalizer"]): r["midpoint"] for r in rows
          if r["model"] == "ResNet-8"}
    assert r8[("weight", "reset_bn")] > r8[("identity", "none")] + 0.4
    assert r8[("weight", "repair")] > r8[("weight", "none")] + 0.2
    assert len(rows) == 9 + 6 + 6 + 2


def test_oneshot_pruning_bn_reset_recovers_accuracy(quick):
    """ResNet-8 at 80% sparsity: 58.9% pruned → 90.8% after a BN reset (dense 90.8%)
    (measured)."""
    rows = _rows(_table(quick["oneshot_pruning"], "One-shot"))
    r8 = [r for r in rows if r["model"] == "ResNet-8" and r["normalizer"] == "reset_bn"
          and abs(r["sparsity"] - 0.8) < 1e-3]
    assert r8 and r8[0]["re-normalized"] > r8[0]["pruned"] + 0.15


def test_vanishing_feature_is_seen_and_repaired(quick):
    """MLP on digits: E_l of the last layer 0.15 for the naive midpoint, 0.95 for weight
    matching + REPAIR; magnitude-pruned at 90% 0.18, + REPAIR 0.53 (measured)."""
    rows = _rows(_table(quick["vanishing_feature"], "Input-induced"))
    last = {r["diagnosed"]: r["E_l (first … last layer)"][-1] for r in rows}
    assert last["merged (weight + repair)"] > 2 * last["merged (identity + none)"]
    pruned = {r["target"]: r["E_l (first … last layer)"][-1] for r in rows
              if r["diagnosed"] == "pruned"}
    assert pruned["pruned (magnitude) + repair"] > 2 * pruned["pruned (magnitude)"]


def test_pfm_sweeps_every_matcher_and_costs_grow_with_k(quick):
    """MLP (3 layers): k = 0 … 3 per matcher, FLOPs ×1.0, 1.19, 1.58, 1.97 (measured)."""
    rows = _rows(_table(quick["pfm_sweep"], "Preserve-first"))
    assert {r["matcher"] for r in rows} == {"weight", "activation", "zipit", "cca"}
    for m in ("weight", "cca"):
        cost = [r["FLOPs ×"] for r in rows if r["matcher"] == m]
        assert cost[0] == pytest.approx(1.0) and cost == sorted(cost) and cost[-1] > 1.5


def test_sms_soup_keeps_the_sparsity_of_its_phase(quick):
    """2 phases to 80%: 55.3% then 80.0%, soup and IMP alike (measured)."""
    rows = _rows(_table(quick["sms_resnet20"], "Sparse Model Soups"))
    soups = [r for r in rows if r["model"] == "soup"]
    assert [round(r["sparsity"], 2) for r in soups] == [0.55, 0.8]
    for phase in (1, 2):
        models = {r["model"]: r for r in rows if r["phase"] == phase}
        assert models["soup"]["sparsity"] == pytest.approx(models["IMP"]["sparsity"])
