"""Merging, interpolation barriers, the vanishing-feature diagnostic and FLOP counts."""

from __future__ import annotations

import json

import pytest
import torch
from weightlab import checkpoint as ckpt_io
from weightlab import testing
from weightlab.errors import UsageError
from weightlab.flopcount import count
from weightlab.interpolation import average_states, barriers
from weightlab.vanishing import diagnose
from weightlab_cli.main import main


@pytest.fixture(scope="module")
def mnist_pair():
    root = testing.shared_data_dir("MNIST")
    return root, testing.trained("mlp", "mnist", data_dir=root, epochs=2, train={"lr": 0.05})


def test_barriers_follow_the_seed_definitions():
    losses, accs = [0.2, 0.9, 0.4], [0.95, 0.5, 0.85]
    b = barriers(losses, accs)
    assert b["loss_barrier"] == pytest.approx(0.9 - 0.5 * (0.2 + 0.4))
    assert b["acc_barrier"] == pytest.approx(0.5 * (0.95 + 0.85) - 0.5)


def test_git_rebasin_barrier_is_the_gap_below_the_straight_line():
    """Unequal endpoints, worst point off the middle: L = [0.2, 0.3, 0.5, 1.0, 1.0] at
    α = 0, ¼, ½, ¾, 1 (re-stated by hand). Line: 0.2 + 0.8α → gaps 0, −0.1, −0.1, 0.2, 0:
    Git Re-Basin's barrier 0.2; the seed's max − mean = 1.0 − 0.6 = 0.4. Accuracies
    [0.9, 0.5, 0.6, 0.7, 0.5]: line 0.9 − 0.4α → gaps 0, 0.3, 0.1, −0.1, 0 → 0.3; the seed's
    mean − min = 0.7 − 0.5 = 0.2."""
    b = barriers([0.2, 0.3, 0.5, 1.0, 1.0], [0.9, 0.5, 0.6, 0.7, 0.5],
                 [0.0, 0.25, 0.5, 0.75, 1.0])
    assert b["loss_barrier_line"] == pytest.approx(0.2)
    assert b["loss_barrier"] == pytest.approx(0.4)
    assert b["acc_barrier_line"] == pytest.approx(0.3)
    assert b["acc_barrier"] == pytest.approx(0.2)


def test_average_states_is_weighted_and_keeps_integer_buffers():
    a = {"w": torch.ones(3), "n": torch.tensor(5)}
    b = {"w": torch.zeros(3), "n": torch.tensor(9)}
    out = average_states([a, b], [0.25, 0.75])
    assert torch.equal(out["w"], torch.full((3,), 0.25))
    assert int(out["n"]) == 5


def test_flops_match_spec():
    """SPEC §2: cifar_resnet20 272,474 params, 41 MMAC; cifar_vgg16 14,719,818 params."""
    r = count(testing.tiny_model("cifar_resnet20", (3, 32, 32)), (3, 32, 32))
    assert r["params"] == 272_474
    assert round(r["macs"] / 1e6) == 41
    v = count(testing.tiny_model("cifar_vgg16", (3, 32, 32)), (3, 32, 32))
    assert v["params"] == 14_719_818


def test_vanishing_feature_of_naive_merge(mnist_pair):
    """Naive midpoint of two MNIST MLPs (2 epochs each, seeds 0/1). Measured: E_l =
    0.76, 0.33, 0.14, 0.08 from the first layer to the logits; ‖f(x)−f(0)‖ of the logits
    falls from ~13.5 to ~1.1 while the references keep theirs."""
    root, (pa, pb) = mnist_pair
    a, _ = ckpt_io.load_model(pa)
    b, _ = ckpt_io.load_model(pb)
    merged = testing.tiny_model("mlp", (1, 28, 28))
    merged.load_state_dict(average_states([a.state_dict(), b.state_dict()], [0.5, 0.5]))
    data = testing.tiny_data("mnist", data_dir=root)
    res = diagnose([a, b], merged, data.loader("test", batch_size=500), input_shape=(1, 28, 28),
                   samples=1000)
    r = res["ratio"]
    assert len(r) == 4
    assert all(x > y for x, y in zip(r, r[1:])), r  # shrinks layer by layer
    assert r[-1] < 0.25
    assert res["target"]["logit_input_norm"] < 0.3 * res["references"][0]["logit_input_norm"]


def test_bias_split_is_exact_for_linear_mlp():
    """For a linear network f_l(x) = input part + bias part exactly; the diagnostic's
    bias-induced part is f_l(0) and its input-induced part ‖f_l(x) − f_l(0)‖."""
    net = testing.tiny_model("mlp", (1, 8, 8), activation="none", width=32, depth=2)
    data = testing.tiny_data("digits")
    loader = data.loader("test", batch_size=100)
    res = diagnose([net], net, loader, input_shape=(1, 8, 8), samples=200)
    split = res["bias_split"]["target"]
    assert split["input_induced"] == pytest.approx(res["target"]["m"], rel=1e-5)
    assert res["ratio"] == pytest.approx([1.0] * len(res["ratio"]))


def test_merge_cli_rejects_bad_input(mnist_pair, tmp_path, capsys):
    root, (pa, pb) = mnist_pair
    out = tmp_path / "m.safetensors"
    assert main(["merge", str(pa), str(pb), "--alpha", "1.5", "-o", str(out)]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    net = testing.tiny_model("mlp", (1, 28, 28), width=64)
    ckpt_io.save(ckpt_io.from_model(net, ckpt_io.model_info("mlp", {"width": 64}, (1, 28, 28),
                                                             10)), other)
    code = main(["merge", str(pa), str(other), "--matcher", "identity", "--no-evaluate",
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "layers.1.weight" in err and "shape" in err and "Traceback" not in err
    assert not out.exists()


def test_merge_and_interpolate_cli(mnist_pair, tmp_path, capsys):
    """Naive merge through the CLI writes a plain checkpoint with provenance; interpolation
    reports a positive accuracy barrier for the naive path (measured test barrier ≈ 9 points
    with these 2-epoch MLPs) and writes its plot."""
    root, (pa, pb) = mnist_pair
    out = tmp_path / "naive.safetensors"
    code = main(["merge", str(pa), str(pb), "--matcher", "identity", "--data-dir", str(root),
                 "-o", str(out), "--json"])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["weights"] == [0.5, 0.5]
    ck = ckpt_io.load(out)
    assert ck.provenance["kind"] == "merged" and len(ck.provenance["sources"]) == 2
    assert main(["merge", str(pa), str(pb), "--matcher", "identity", "-o", str(out)]) == 2
    plot = tmp_path / "curve.png"
    code = main(["interpolate", str(pa), str(pb), "--matcher", "identity", "--points", "3",
                 "--splits", "test", "--data-dir", str(root), "--plot", str(plot), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["test"]["top1"]) == 3
    assert res["test"]["acc_barrier"] > 0.02
    assert res["units"]["top1"] == "fraction (0–1)" and not res["endpoints_normalized"]
    assert plot.stat().st_size > 1000
    # with a normalizer: endpoints normalized too by default; raw as the seed with a flag
    curves = {}
    for flag in ("--normalize-endpoints", "--raw-endpoints"):
        code = main(["interpolate", str(pa), str(pb), "--matcher", "identity", "--points", "3",
                     "--splits", "test", "--data-dir", str(root), "--normalizer", "rescale",
                     flag, "--json"])
        assert code == 0
        curves[flag] = json.loads(capsys.readouterr().out)
    raw, normed = curves["--raw-endpoints"], curves["--normalize-endpoints"]
    assert normed["endpoints_normalized"] and not raw["endpoints_normalized"]
    assert raw["test"]["top1"][0] == pytest.approx(res["test"]["top1"][0])  # A as it is
    assert raw["test"]["top1"][1] == pytest.approx(normed["test"]["top1"][1])  # same middle


def test_diagnose_tap_points_show_where_repair_acts():
    """Two ResNet-8s (BatchNorm) trained 3 epochs on digits, weight-matched + REPAIR midpoint.
    Measured E_l (360 test images): tap=layer (conv outputs, before BN) 0.62–0.82 — REPAIR's
    correction does not show there; tap=norm (after the BN reading each conv, where REPAIR
    corrects) 1.00–1.22 for every layer but the uncorrected head (0.72); tap=all (the VF
    notebooks' hooks: every conv, linear and norm) has both, 19 points. The naive midpoint at
    tap=norm vanishes with depth (0.67 → 0.05)."""
    import weightlab

    paths = testing.trained("cifar_resnet8", "digits", epochs=3,
                            train={"lr": 0.05, "batch_size": 64})
    runs = {tap: weightlab.diagnose(paths, matcher="weight", normalizer="repair", tap=tap,
                                    samples=360) for tap in ("layer", "norm", "all")}
    layer, norm, every = (runs[t]["ratio"] for t in ("layer", "norm", "all"))
    assert len(layer) == len(norm) == 10 and len(every) == 19
    assert all(0.9 < e < 1.4 for e in norm[:-1]) and max(layer) < 0.9
    assert runs["norm"]["layers"][0] == "bn1" and runs["layer"]["layers"][0] == "conv1"
    naive = weightlab.diagnose(paths, matcher="identity", tap="norm", samples=360)["ratio"]
    assert naive[-2] < 0.5 * naive[0]
    with pytest.raises(UsageError, match="tap='conv'"):
        weightlab.diagnose(paths, matcher="identity", tap="conv", samples=10)


def test_merge_calls_match_many_when_a_matcher_aligns_all_models_jointly():
    """A matcher defining ``match_many`` aligns all K models into one space itself (every
    model, the first included, gets its alignment); one returning None, the base default, keeps
    align-to-the-first with ``match``; a wrong count is one line."""
    from weightlab.alignment import Alignment, permute_model, random_permutation
    from weightlab.components import Matcher
    from weightlab.merging import merge

    net = testing.tiny_model("mlp", depth=2, width=16).eval()
    graph = testing.trace(net)
    gen = torch.Generator().manual_seed(0)
    perms = [random_permutation(graph, gen) for _ in range(3)]
    models = [permute_model(net, graph, p) for p in perms]  # three copies of one model
    calls = []

    class Joint(Matcher):
        name, summary = "joint-test", "all models back to the original order"

        def match_many(self, graph, models, data=None):
            calls.append(len(models))
            return [p.inverse() for p in perms[:len(models)]]

        def match(self, graph, ref, other, data=None):
            raise AssertionError("match must not be called when match_many answers")

    res = merge(models, [1 / 3] * 3, matcher=Joint(), graph=graph)
    assert calls == [3]
    for key, value in net.state_dict().items():
        assert torch.allclose(res.model.state_dict()[key].float(), value.float(), atol=1e-6), key

    class Pairwise(Matcher):
        name, summary = "pairwise-test", "identity, pair by pair"

        def match(self, graph, ref, other, data=None):
            calls.append("match")
            return Alignment.identity(graph)

    assert Pairwise().match_many(graph, models) is None
    merge(models, [1 / 3] * 3, matcher=Pairwise(), graph=graph)
    assert calls[1:] == ["match", "match"]

    class Short(Joint):
        def match_many(self, graph, models, data=None):
            return [None]

    with pytest.raises(UsageError, match="returned 1 alignments for 3 models"):
        merge(models, [1 / 3] * 3, matcher=Short(), graph=graph)


def test_merge_diagnostics_script_on_two_random_vits(tmp_path, monkeypatch, capsys):
    """scripts/merge_diagnostics.py (docs/results.md, "Why the ViT midpoints stay low") on two
    untrained ViT-2×32/2 built from seeds 0 and 1: every weight-matched B computes B's function
    (max |Δ logits| printed ≤ 1e-4) and the initialization it rebuilds from the provenance's
    seed is the model itself (cos(W, W₀) = 1.00 / 1.00 for all 12 weight tensors)."""
    import re
    import runpy
    import sys
    from pathlib import Path

    paths = []
    for seed in (0, 1):
        net = testing.tiny_model("vit_d2_w32_p2_h4", seed=seed)
        info = ckpt_io.model_info("vit_d2_w32_p2_h4", {}, (1, 8, 8), 10)
        paths.append(ckpt_io.save(ckpt_io.from_model(net, info, data={"name": "digits"},
                                                     provenance={"seed": seed}),
                                  tmp_path / f"vit_{seed}.safetensors"))
    script = Path(__file__).resolve().parents[1] / "scripts" / "merge_diagnostics.py"
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, paths), "--seeds", "2",
                                      "--samples", "200", "--threads", "1"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    deltas = [float(d) for d in re.findall(r"max \|Δ logits\| (\S+)", out)]
    assert len(deltas) == 2 and max(deltas) <= 1e-4
    cos = re.findall(r"^  \S+ +(\S+) / (\S+)$", out, flags=re.M)
    assert len(cos) == 12 and all(c == ("1.00", "1.00") for c in cos)
