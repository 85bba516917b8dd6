"""The built-in matchers on real models and data: weight and activation matching recover a
known permutation exactly; weight matching makes the midpoint of two MNIST MLPs trained from
different seeds nearly as good as its endpoints."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from weightlab import plugins, testing
from weightlab.alignment import permute_model, random_permutation
from weightlab.checkpoint import load_model
from weightlab.data.bundle import load_data
from weightlab.errors import ParamError, UsageError
from weightlab.graph import trace
from weightlab.matching.features import collect_feature_stats
from weightlab.metrics import evaluate


def matcher(name: str, **params):
    return plugins.registry().create("matchers", name, params)


def randomized(model, seed: int = 0):
    """Random BN affine parameters and running statistics (they are entries too)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, v in model.state_dict().items():
            if v.is_floating_point() and v.dim() == 1:
                r = torch.rand(v.shape, generator=gen) + 0.5 if "running_var" in key \
                    else torch.randn(v.shape, generator=gen)
                v.copy_(r)
    return model.eval()


def midpoint(model, state_a, state_b):
    """A copy of ``model`` holding the plain average of two state dicts (a local stand-in
    for the merge module)."""
    out = copy.deepcopy(model)
    out.load_state_dict({k: (state_a[k] + state_b[k]) / 2 if state_a[k].is_floating_point()
                         else state_a[k] for k in state_a})
    return out


@pytest.mark.parametrize("name,shape", [("cifar_resnet20", (3, 32, 32)),
                                        ("cifar_vgg11_bn", (3, 32, 32)),
                                        ("mlp", (1, 28, 28))])
def test_weight_matching_recovers_a_known_permutation(name, shape):
    """Measured (this CPU): exact recovery after 2, 2 and 3 sweeps."""
    net = randomized(testing.tiny_model(name, input_shape=shape))
    graph = trace(net, torch.zeros(1, *shape))
    known = random_permutation(graph, torch.Generator().manual_seed(1))
    other = permute_model(net, graph, known)
    found = matcher("weight").match(graph, net, other)
    inverse = known.inverse()
    assert found.perms.keys() == inverse.perms.keys()
    assert all(torch.equal(found.perms[s], inverse.perms[s]) for s in inverse.perms)
    assert found.info["sweeps"] <= 5


@pytest.mark.parametrize("similarity", ["inner", "correlation"])
def test_activation_matching_recovers_a_known_permutation(similarity):
    """cifar_resnet20 (random init, 1×8×8 inputs) on 1,000 real digits: every space's
    permutation, residual streams included, is recovered exactly — except between channels
    that are dead on this data (all-zero features: any order of them is optimal; measured:
    space 9, layer3.0.conv1, has 2 such channels, which inner-product matching swaps)."""
    from weightlab.matching.features import collect_feature_stats

    data = testing.tiny_data("digits")
    net = testing.tiny_model("cifar_resnet20", input_shape=(1, 8, 8)).eval()
    graph = trace(net, torch.zeros(1, 1, 8, 8))
    known = random_permutation(graph, torch.Generator().manual_seed(3))
    other = permute_model(net, graph, known)
    calib = data.loader("calibration", batch_size=250, num_samples=1000)
    found = matcher("activation", samples=1000, similarity=similarity).match(graph, net, other,
                                                                            calib)
    assert found.info["observations"] > 1000 and found.info["similarity"] == similarity
    inverse = known.inverse()
    stats = collect_feature_stats([net], graph, calib, 1000)
    for s in inverse.perms:
        dead = stats[s].inner().diagonal() < 1e-12  # E[A_i²] = 0: never active
        wrong = found.perms[s] != inverse.perms[s]
        assert not (wrong & ~dead).any(), s  # every live channel goes where it came from


def test_inner_product_is_git_rebasins_objective_and_differs_from_correlation():
    """Hand-made features, x, y independent N(0, 1), 4,000 rows: A = [x + 10, y],
    B = [x, y + 10]. Correlation matches shapes: π = identity (corr 1 on the diagonal, ≈ 0
    off it). The inner product E[A_i B_j] (re-stated as AᵀB/N) is uncentered, so the offsets
    dominate: E[(x+10)(y+10)] ≈ 100 ≫ E[(x+10)x] + E[y(y+10)] ≈ 2, and it swaps."""
    from weightlab.matching.assignment import solve_assignment
    from weightlab.matching.features import FeatureStats

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 4000, generator=gen, dtype=torch.float64)
    a, b = torch.stack([x + 10, y], 1), torch.stack([x, y + 10], 1)
    z = torch.cat([a, b], 1)
    st = FeatureStats(4000, z.mean(0), (z - z.mean(0)).T @ (z - z.mean(0)), 2)
    assert torch.allclose(st.block(0, 1, "inner"), a.T @ b / 4000, atol=1e-9)
    assert solve_assignment(st.block(0, 1, "corr")).tolist() == [0, 1]
    assert solve_assignment(st.block(0, 1, "inner")).tolist() == [1, 0]


def test_non_finite_similarities_are_an_error_not_zeros():
    """Before: NaN/inf scores became 0 and an arbitrary matching came back silently."""
    from weightlab.errors import WeightlabError
    from weightlab.matching.assignment import solve_assignment

    score = torch.eye(4, dtype=torch.float64)
    score[2, 1] = float("nan")
    with pytest.raises(WeightlabError, match=r"space 7: the similarity matrix has 1 non-finite "
                                             r"entries \(first at \[2, 1\]"):
        solve_assignment(score, what="space 7")


def test_weight_matching_leaves_bn_running_statistics_out_by_default():
    """Reference code (flax) keeps batch statistics outside the parameters it matches. With
    A's running means/vars scrambled by a permutation that disagrees with its weights, the
    default objective ignores them (the weights' permutation is recovered), while
    include_bn_stats=true counts them (measured: the objectives differ)."""
    net = testing.tiny_model("cifar_resnet8", input_shape=(1, 8, 8), seed=0).eval()
    graph = trace(net, torch.zeros(1, 1, 8, 8))
    known = random_permutation(graph, torch.Generator().manual_seed(1))
    other = permute_model(net, graph, known)
    with torch.no_grad():  # large, misleading running statistics on B
        for name, buf in other.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand(buf.shape, generator=torch.Generator().manual_seed(5)) * 50)
    plain = matcher("weight").match(graph, net, other)
    inverse = known.inverse()
    assert all(torch.equal(plain.perms[s], inverse.perms[s]) for s in inverse.perms)
    counted = matcher("weight", include_bn_stats=True).match(graph, net, other)
    assert counted.info["objective"] != plain.info["objective"]


def test_weight_matching_hooks_init_and_similarity():
    """The two hooks of ``weight_matching`` (for matchers built on its descent, e.g. MuDSC):
    an identity ``similarity`` changes nothing (the same permutations, bit for bit); started
    from its own solution (``init``) the descent stops after one sweep with it unchanged; a
    ``similarity`` that ignores S_p and returns a fixed matrix per space gives exactly that
    matrix's linear assignment per space (re-stated with scipy)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    from weightlab.matching.weight import weight_matching

    a, b = (testing.tiny_model("mlp", (1, 8, 8), seed=s, depth=2, width=32) for s in (0, 1))
    graph = trace(a, torch.zeros(1, 1, 8, 8))
    sa, sb = a.state_dict(), b.state_dict()
    plain = weight_matching(graph, sa, sb)
    same = weight_matching(graph, sa, sb, similarity=lambda space, score: score)
    assert all(torch.equal(plain.perms[s], same.perms[s]) for s in plain.perms)
    again = weight_matching(graph, sa, sb, init=plain.perms)
    assert again.info["sweeps"] == 1
    assert all(torch.equal(plain.perms[s], again.perms[s]) for s in plain.perms)
    gen = torch.Generator().manual_seed(4)
    fixed = {s.id: torch.randn(s.size, s.size, generator=gen, dtype=torch.float64)
             for s in graph.free_spaces()}
    got = weight_matching(graph, sa, sb, similarity=lambda space, score: fixed[space.id])
    for sid, m in fixed.items():
        rows, cols = linear_sum_assignment(m.numpy(), maximize=True)
        assert np.array_equal(got.perms[sid].numpy()[rows], cols)


def test_feature_stats_match_a_direct_computation():
    """The one-pass (Chan) statistics over several batches and pooled feature points equal
    torch.cov of the stored features."""
    data = testing.tiny_data("digits")
    nets = [testing.tiny_model("cifar_resnet20", input_shape=(1, 8, 8), seed=s).eval()
            for s in (0, 1)]
    graph = trace(nets[0], torch.zeros(1, 1, 8, 8))
    loader = data.loader("calibration", batch_size=96, num_samples=300)
    stats = collect_feature_stats(nets, graph, loader, samples=250)
    stem = graph[graph.layers[0].out_space]  # the residual stream: 4 feature points
    from weightlab.graph import feature_reader

    x = torch.cat([b for b, _ in loader])[:250]
    rows = []
    for p in stem.feature_points:
        f = [feature_reader(n, graph, [p])(x)[1][p] for n in nets]
        rows.append(torch.cat([t.movedim(1, -1).reshape(-1, t.shape[1]) for t in f], 1))
    joint = torch.cat(rows).double()
    st = stats[stem.id]
    assert st.count == joint.shape[0] == 250 * 64 * 4
    torch.testing.assert_close(st.mean, joint.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st.cov, torch.cov(joint.T, correction=0), rtol=1e-4, atol=1e-6)
    assert st.block(0, 1, "corr").shape == (16, 16)


@pytest.mark.slow
def test_weight_matching_rescues_the_mnist_midpoint():
    """Two MLPs (3×512, ReLU) trained 2 epochs on full MNIST from seeds 0 and 1. Measured on
    the 10,000 test images (this CPU): endpoints 97.54% / 97.65%; naive midpoint 88.69%
    (loss 1.64); weight-matched midpoint 97.26% (loss 0.125); activation-matched (5,000
    calibration images) 97.26% (loss 0.103)."""
    root = testing.shared_data_dir("MNIST")
    paths = testing.trained("mlp", "mnist", data_dir=root, epochs=2, train={"lr": 0.05})
    (a, _), (b, _) = (load_model(p) for p in paths)
    data = load_data("mnist", data_dir=root)
    test = data.loader("test", batch_size=2000)
    graph = trace(a, torch.zeros(1, 1, 28, 28))
    sa, sb = a.state_dict(), b.state_dict()
    ends = [evaluate(m, test) for m in (a, b)]
    naive = evaluate(midpoint(a, sa, sb), test)
    wm = matcher("weight").match(graph, a, b)
    weight = evaluate(midpoint(a, sa, wm.apply(graph, sb)), test)
    calib = data.loader("calibration", batch_size=1000, num_samples=5000)
    am = matcher("activation").match(graph, a, b, calib)
    act = evaluate(midpoint(a, sa, am.apply(graph, sb)), test)
    worst_end = min(e["top1"] for e in ends)
    assert worst_end > 0.96
    assert naive["top1"] < 0.92 and naive["loss"] > 1.0
    assert weight["top1"] > naive["top1"] + 0.06 and weight["top1"] > worst_end - 0.01
    assert weight["loss"] < naive["loss"] / 5
    assert act["top1"] > worst_end - 0.01
    # aligning never changes B's function
    aligned_b = permute_model(b, graph, wm)
    torch.testing.assert_close(evaluate(aligned_b, test)["loss"], ends[1]["loss"], rtol=1e-4,
                               atol=0)


def test_matchers_are_registered_components():
    assert [matcher(n).name for n in ("identity", "weight", "activation")] == [
        "identity", "weight", "activation"]
    assert matcher("weight", max_iter="7").params.max_iter == 7
    with pytest.raises(ParamError, match="weight.max_iter: 0 must be >= 1"):
        matcher("weight", max_iter=0)
    with pytest.raises(ParamError, match="precision"):
        matcher("weight", precision="float16")
    net = testing.tiny_model("mlp")
    graph = trace(net, torch.zeros(1, 1, 8, 8))
    with pytest.raises(UsageError, match="activation needs calibration data"):
        matcher("activation").match(graph, net, net)
    ident = matcher("identity").match(graph, net, net)
    assert all(torch.equal(p, torch.arange(len(p))) for p in ident.perms.values())


def test_benchmark_quick_agrees_with_the_reference(tmp_path):
    """``python -m benchmarks.bench_matching --quick`` runs and its own check holds:
    weightlab's matcher and the numpy reference reach the same permutations and objective
    (float64) on two random cifar_resnet20 (measured: identical, 3 sweeps) and on two random
    ViTs (vit_d2_w32_p4_h4: tied head units, packed in_proj rows; identical, 3 sweeps)."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "benchmarks.bench_matching", "--quick", "--models",
           "cifar_resnet20", "vit_d2_w32_p4_h4", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=testing.REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["cifar_resnet20", "vit_d2_w32_p4_h4"]
    for r in rows:
        assert r["f64_same_perms"] and abs(r["f64_rel_objective"]) < 1e-12
        assert r["ref_sweeps"] == 3 and r["f32_same_perms"]
    assert "cifar_resnet20" in proc.stdout
