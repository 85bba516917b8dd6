"""Sweeps compute a pruner's sparsity-independent statistics once (``Pruner.analyze``), pass
them only to pruners that have some, refuse an analysis of another model state, and the CLI
reports the one analysis time."""

import copy
from dataclasses import dataclass

import pytest
import torch
from weightlab import plugins, pruning, testing
from weightlab.components import Pruner
from weightlab.errors import UsageError, WeightlabError


class OldSignaturePruner(Pruner):
    """A third-party pruner written before ``analyze`` existed: 4-argument ``prune``."""

    name = "old_magnitude"
    summary = "per-layer magnitude, the old prune signature"

    def prune(self, model, sparsity, masks, data=None):
        names = pruning.prunable_names(model)
        old = pruning.full_masks(model, names, masks)
        params = dict(model.named_parameters())
        return pruning.masks_from_scores({n: params[n].detach().abs() for n in names},
                                         sparsity, old, "per_layer")


class CountingPruner(Pruner):
    """Global magnitude whose scores come from ``analyze``; counts the calls."""

    name = "counting"
    summary = "global magnitude, scores from analyze"

    @dataclass
    class Params:
        pass

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.analyzed, self.given = 0, []

    def analyze(self, model, masks, data=None):
        self.analyzed += 1
        names = pruning.prunable_names(model)
        old = pruning.full_masks(model, names, masks)
        params = dict(model.named_parameters())
        return pruning.Analysis.of(self, model, names, old,
                                   {n: params[n].detach().abs() for n in names})

    def prune(self, model, sparsity, masks, data=None, analysis=None):
        self.given.append(analysis)
        names = pruning.prunable_names(model)
        old = pruning.full_masks(model, names, masks)
        analysis.check(self, model, names, old)
        return pruning.masks_from_scores(analysis.stats, sparsity, old, "joint")


def _net():
    return testing.tiny_model("mlp", width=16, seed=3)


def test_old_signature_pruner_keeps_working_in_a_sweep():
    net = _net()
    results = {}
    records = pruning.sweep(net, OldSignaturePruner(), [0.3, 0.7],
                            on_result=lambda s, m, k, r: results.setdefault(s, k))
    assert [r["sparsity"] for r in records] == pytest.approx([0.3, 0.7], abs=0.01)
    assert "analyze" not in records[0]["seconds"]  # no analysis, no analysis time
    _, masks, _ = pruning.one_shot(net, OldSignaturePruner(), 0.7)
    assert all(torch.equal(masks[n], results[0.7][n]) for n in masks)


def test_sweep_analyzes_once_and_passes_the_analysis_to_every_prune():
    net = _net()
    pruner = CountingPruner()
    records = pruning.sweep(net, pruner, [0.2, 0.5, 0.9])
    assert pruner.analyzed == 1 and len(pruner.given) == 3
    assert all(a is pruner.given[0] for a in pruner.given)
    assert records[0]["seconds"]["analyze"] > 0  # timed (an absent or unset timer fails)
    assert all("analyze" not in r["seconds"] for r in records[1:])
    assert [r["sparsity"] for r in records] == pytest.approx([0.2, 0.5, 0.9], abs=1e-3)


def test_sweep_takes_one_pruner_not_a_factory():
    with pytest.raises(UsageError, match="expected one pruner"):
        pruning.sweep(_net(), lambda: OldSignaturePruner(), [0.5])


def test_an_analysis_refuses_another_model_state():
    net = _net()
    reg = plugins.registry()
    mag = reg.create("pruners", "global_magnitude")
    analysis = mag.analyze(copy.deepcopy(net), {})
    mag.prune(copy.deepcopy(net), 0.5, {}, analysis=analysis)  # the same state: accepted

    moved = copy.deepcopy(net)
    with torch.no_grad():
        moved.layers[1].bias[0] += 1e-3  # not even a pruned parameter
    with pytest.raises(WeightlabError, match="checksum mismatch") as err:
        mag.prune(moved, 0.5, {}, analysis=analysis)
    assert "\n" not in str(err.value)  # one line
    other_masks = reg.create("pruners", "random", {"seed": 1}).prune(copy.deepcopy(net), 0.2, {})
    with pytest.raises(WeightlabError, match="checksum mismatch"):
        mag.prune(copy.deepcopy(net), 0.5, other_masks, analysis=analysis)
    with pytest.raises(WeightlabError, match="computed by global_magnitude"):
        reg.create("pruners", "magnitude").prune(copy.deepcopy(net), 0.5, {}, analysis=analysis)
    with pytest.raises(WeightlabError, match="computed by global_magnitude with"):
        reg.create("pruners", "global_magnitude", {"skip_last": True}).prune(
            copy.deepcopy(net), 0.5, {}, analysis=analysis)
    with pytest.raises(WeightlabError, match="computed for parameters"):
        mag.prune(testing.tiny_model("mlp", width=8), 0.5, {}, analysis=analysis)
    with pytest.raises(WeightlabError, match="analysis must be"):
        mag.prune(copy.deepcopy(net), 0.5, {}, analysis={"scores": {}})


def test_cli_sweep_reports_one_analysis_time(cli, digits_ckpt, tmp_path):
    args = ["prune", digits_ckpt, "--pruner", "woodfisher", "--sweep", "0.5,0.8",
            "-p", "samples=200", "-p", "block_size=32"]
    res = cli.json(*args, "-o", tmp_path / "s")
    first, second = res["records"]
    assert first["seconds"]["analyze"] > 0 and "analyze" not in second["seconds"]
    for rec in (first, second):
        assert set(rec["pruner_report"]["stages"]) == {"scores", "update"}
        assert set(rec["pruner_report"]["analysis_stages"]) == {"gradients", "inverse"}
    code, out, err = cli(*args, "-o", tmp_path / "t")
    assert code == 0, err
    assert "computed once" in err and "0.8" in out


def test_benchmark_sweep_part_checks_identity_first(tmp_path):
    """``python -m benchmarks.bench_woodfisher --quick --parts sweep`` at a tiny size: the reused
    and the recomputed sweeps agree exactly before any time is reported."""
    import json
    import subprocess
    import sys

    out = tmp_path / "wf.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_woodfisher", "--quick",
                           "--parts", "sweep", "--samples", "16", "--block-size", "32",
                           "--sweep", "0.5,0.9", "--threads", "1", "--out", str(out)],
                          cwd=testing.REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["identical"] == {"0.5": True, "0.9": True}
    assert row["analyze_s"] > 0 and len(row["recomputed_prune_s"]) == 2
    assert "identical at every sparsity" in proc.stdout
