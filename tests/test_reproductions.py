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
    # the seed's settings: its training scripts' recipes, or (the linear-MLP notebook, which
    # has no script) the notebook's own settings written into the steps
    if name == "vf_linear_mlp":
        assert all(t["train_param"]["optimizer"] == "adam" and t["lr"] == 0.01 and
                   t["model_param"]["init"] == "normal:std=0.002" for t in trains)
    elif name == "vit_merging":  # not in the seed code: the ViT recipe's own AdamW + cosine
        assert trains and all(t["model"].startswith("vit_") and t["data"] == "cifar10" and
                              t["train_param"]["optimizer"] == "adamw" for t in trains)
    else:
        assert trains and all(str(t.get("recipe", "")).startswith("vf-cifar10-")
                              for t in trains)


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
    weight matching 23.9%, + BN reset 69.2%, + REPAIR 68.6% (measured)."""
    rows = _rows(_table(quick["merge_pairs"], "Midpoint"))
    r8 = {(r["matcher"], r["normalizer"]): r["midpoint"] for r in rows
          if r["model"] == "ResNet-8"}
    assert r8[("weight", "reset_bn")] > r8[("identity", "none")] + 0.4
    assert r8[("weight", "repair")] > r8[("weight", "none")] + 0.2
    assert len(rows) == 9 + 6 + 6 + 2


def test_vit_merging_alignment_beats_the_naive_midpoint(quick):
    """Two ViT-2×32/2 (4 heads) on digits, 30 epochs (endpoints 97.2%, 95.8%): naive midpoint
    11.7%, weight matching 23.3%, activation matching 26.1% (every stream, MLP and head space
    aligned); REPAIR at the linear outputs does not help here (8.9%, 16.4%) (measured)."""
    rows = _rows(_table(quick["vit_merging"], "Midpoint"))
    mid = {(r["matcher"], r["normalizer"]): r["midpoint"] for r in rows}
    assert min(r["model A"] for r in rows) > 0.93
    for m in ("weight", "activation"):
        assert mid[(m, "none")] > mid[("identity", "none")] + 0.08
    assert len(rows) == 6


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


@pytest.mark.slow
def test_linear_mlp_notebook_pattern_at_full_size(tmp_path, monkeypatch):
    """The VF linear-MLP notebook's setting on full MNIST, three pairs (seeds 0, 2, 4), as
    `weightlab run recipes/vf_linear_mlp.toml`. Notebook (one pair): endpoint 85.8%, naive
    8.9%, weight-matched 16.1%, activation-matched 53.8%. Measured here (1 torch thread), means
    over the pairs: endpoints 71.8%, naive 9.5%, weight 17.1%, activation (inner product)
    36.7%, activation (correlation, the notebook's) 21.0%; with 2 threads the unstable setting
    gives endpoints 78.6% (60.5–85.9%), naive 11.8%, weight 23.1%, inner 29.4%, correlation
    21.4%. The notebook's ordering naive < weight < activation < endpoint holds for the means;
    the margins are about half the smallest measured gaps."""
    from weightlab import testing

    monkeypatch.setenv("WEIGHTLAB_DATA", str(testing.shared_data_dir("MNIST")))
    code, text = _run("run", RECIPES / "vf_linear_mlp.toml", "--out", tmp_path, "--json")
    assert code == 0
    rows = _rows(_table(json.loads(text), "Midpoints of linear MLPs"))

    def mean(matcher, corr=False):
        vals = [r["midpoint"] for r in rows if r["matcher"] == matcher
                and ("correlation" in r["pair"]) == corr]
        assert len(vals) == 3
        return sum(vals) / 3

    ends = [r[k] for r in rows for k in ("model A", "model B")]
    naive, weight, act = mean("identity"), mean("weight"), mean("activation")
    print(f"endpoints {sum(ends) / len(ends):.4f} naive {naive:.4f} weight {weight:.4f} "
          f"activation {act:.4f} correlation {mean('activation', True):.4f}")
    assert naive < 0.2 and weight > naive + 0.05 and act > weight + 0.03
    assert min(ends) > act + 0.2
