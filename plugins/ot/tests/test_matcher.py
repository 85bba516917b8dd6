"""The ``ot`` matcher on models: exact OT is a permutation that leaves B's function unchanged,
the layer-by-layer weight procedure undoes a planted permutation (residual ties included),
Sinkhorn gives a consistent soft map, the activation basis with ε = 0 is activation matching
(inner), N-model fusion through ``merge``, and one-line errors."""

from __future__ import annotations

import pytest
import torch
from weightlab import plugins, testing
from weightlab.alignment import permute_model, random_permutation
from weightlab.errors import ParamError, UsageError
from weightlab.merging import merge


def ot(**params):
    return plugins.registry().create("matchers", "ot", params)


def models(name: str, seeds=(0, 1)):
    return [testing.randomize_norms(testing.tiny_model(name, (1, 8, 8), seed=s), s).eval()
            for s in seeds]


@pytest.mark.parametrize("name", ["mlp", "cifar_resnet8"])
@pytest.mark.parametrize("basis", ["weights", "activations"])
def test_exact_ot_is_a_permutation_and_keeps_the_function(name, basis, digits_calibration):
    """Two random-init models (BatchNorm statistics randomized in the ResNet): ε = 0 gives a
    permutation of every free space, not the identity, and B aligned computes what B does."""
    a, b = models(name)
    graph = testing.trace(a)
    al = ot(basis=basis).match(graph, a, b, digits_calibration)
    assert al.is_permutation and set(al.perms) == {s.id for s in graph.free_spaces()}
    assert any(not torch.equal(p, torch.arange(len(p))) for p in al.perms.values())
    testing.assert_same_function(b, permute_model(b, graph, al), digits_calibration)


@pytest.mark.parametrize("name", ["mlp", "cifar_resnet8"])
def test_weight_basis_undoes_a_planted_permutation(name):
    """B = A with every free space randomly permuted: the layer-by-layer weight procedure maps
    B back onto A exactly (the ResNet's residual space is fixed by its stem conv, its later
    producers wait for their input spaces and are left out of the cost)."""
    a = models(name, seeds=(0,))[0]
    graph = testing.trace(a)
    b = permute_model(a, graph, random_permutation(graph, torch.Generator().manual_seed(3)))
    al = ot().match(graph, a, b)
    back = al.apply(graph, b.state_dict())
    assert all(torch.equal(back[k], v) for k, v in a.state_dict().items())
    assert al.info["transport_cost"] < 1e-9
    if name == "cifar_resnet8":
        assert al.info["cost_entries_left_out"]  # the residual stream's later producers


def test_sinkhorn_gives_a_soft_map_consistent_over_every_entry():
    """ε = 0.05 on two random ResNet-8: every space gets M (rows and columns summing to 1,
    non-negative, not a permutation) and U = Mᵀ; applying it maps each entry with M or Mᵀ
    (checked on the stem conv and on the first block's conv, producer and consumer at once)."""
    a, b = models("cifar_resnet8")
    graph = testing.trace(a)
    al = ot(reg=0.05).match(graph, a, b)
    assert not al.perms and set(al.merges) == {s.id for s in graph.free_spaces()}
    for m, u in al.merges.values():
        ones = torch.ones(len(m))
        assert torch.allclose(m.sum(1), ones, atol=1e-3)
        assert torch.allclose(m.sum(0), ones, atol=1e-3)
        assert (m >= 0).all() and float(m.max()) < 1 - 1e-3 and torch.equal(u, m.T)
    out, sb = al.apply(graph, b.state_dict()), b.state_dict()
    stem = next(s for s in graph.free_spaces() if "conv1" in s.producers)
    m, _ = al.merges[stem.id]
    torch.testing.assert_close(out["conv1.weight"], torch.einsum("ij,j...->i...", m,
                                                                 sb["conv1.weight"]))
    inner = next(s for s in graph.free_spaces() if s.producers == ["layer1.0.conv1"])
    w = sb["layer1.0.conv1.weight"]  # producer of `inner` (M₂·W), consumer of the stem (W·Mᵀ)
    torch.testing.assert_close(out["layer1.0.conv1.weight"],
                               torch.einsum("op,pj...,ij->oi...", al.merges[inner.id][0], w, m))


def test_activation_basis_with_exact_ot_is_activation_matching(digits_calibration):
    """With uniform marginals the squared norms in E‖a_i − b_j‖² are constant per row and
    column, so exact OT maximises Σ_i E[a_i b_π(i)]: the optimum of the built-in ``activation``
    matcher (similarity=inner) on the same 512 calibration images. Random ResNet-8s have dead
    channels (all-zero features tie), so the permutations may differ only among ties: the
    objective is equal in every space (measured: to the last digit; 0–22 channels differ)."""
    from weightlab.matching.features import collect_feature_stats

    a, b = models("cifar_resnet8")
    graph = testing.trace(a)
    ours = ot(basis="activations", samples=512).match(graph, a, b, digits_calibration)
    ref = plugins.registry().create("matchers", "activation",
                                    {"samples": 512, "similarity": "inner"}).match(
        graph, a, b, digits_calibration)
    stats = collect_feature_stats([a, b], graph, digits_calibration, 512)
    assert ours.perms.keys() == ref.perms.keys() == stats.keys()
    for sid, st in stats.items():
        sim = st.block(0, 1, "inner")
        rows = torch.arange(len(sim))
        best = float(sim[rows, ref.perms[sid]].sum())
        assert float(sim[rows, ours.perms[sid]].sum()) == pytest.approx(best, rel=1e-12)
        assert best > float(sim.diagonal().sum())  # the identity is not optimal


def test_n_model_fusion_aligns_every_model_to_the_target():
    """The paper's multi-model fusion through ``merge``: three digits MLPs (2×64, 8 epochs,
    seeds 0–2; 95.6 / 93.9 / 94.7 % on the 360 test images) each aligned to the first and
    averaged. Measured: naive average 31.9 %, OT (weights) 88.6 %, weight matching 88.3 %;
    asserted: OT above 80 % and 40 points above naive averaging."""
    from weightlab.checkpoint import load_model
    from weightlab.metrics import evaluate

    paths = testing.trained("mlp", "digits", models=3, epochs=8,
                            model_params={"depth": 2, "width": 64}, train={"lr": 0.05})
    nets = [load_model(p)[0].eval() for p in paths]
    graph = testing.trace(nets[0])
    test = testing.tiny_data("digits").loader("test", batch_size=500)
    fused = merge(nets, [1 / 3] * 3, matcher=ot(), graph=graph)
    assert fused.alignments[0] is None and all(al.is_permutation for al in fused.alignments[1:])
    naive = merge(nets, [1 / 3] * 3, matcher=None, graph=None)
    top = {k: evaluate(r.model, test)["top1"] for k, r in (("ot", fused), ("naive", naive))}
    assert top["ot"] > 0.80 and top["ot"] > top["naive"] + 0.40, top


def test_needs_data_follows_the_basis_and_errors_are_one_line():
    assert not ot().needs_data and ot(basis="activations").needs_data
    assert not ot().pairwise_only and not ot().joint
    with pytest.raises(ParamError, match="basis"):
        ot(basis="gradients")
    with pytest.raises(ParamError, match="ot.reg: -0.1 must be >= 0"):
        ot(reg=-0.1)
    net = testing.tiny_model("mlp")
    with pytest.raises(UsageError, match="basis=activations needs calibration data"):
        ot(basis="activations").match(testing.trace(net), net, net)


def test_grouped_spaces_stay_unaligned_for_now(digits_calibration):
    """A space marked ``groups > 1`` (attention heads, moved as blocks) is left as it is
    (identity) and listed in ``info["unaligned"]``; the other spaces are still aligned and
    B's function is unchanged."""
    a, b = models("mlp")
    graph = testing.trace(a)
    grouped, *rest = graph.free_spaces()
    grouped.groups = 2  # as if its 2 halves were attention heads
    for basis in ("weights", "activations"):
        al = ot(basis=basis).match(graph, a, b, digits_calibration)
        assert grouped.id not in al.perms and al.info["unaligned"] == [grouped.id]
        assert set(al.perms) == {s.id for s in rest}
        testing.assert_same_function(b, permute_model(b, graph, al), digits_calibration)


def test_vit_head_spaces_stay_unaligned_and_the_rest_is_exact():
    """Two random ViTs: ε = 0 aligns the residual stream (class token, position embedding,
    packed in_proj inputs) and both MLP spaces, leaves the four head spaces as they are, and
    B's outputs stay the same (measured max |Δ| 1e-6); a planted permutation of the ungrouped
    spaces is undone exactly by both bases (max |Δ| 0.0); Sinkhorn's soft maps apply."""
    from weightlab.graph import trace

    a, b = testing.torchvision_vit(0), testing.torchvision_vit(1)
    graph = trace(a, torch.randn(1, 3, 28, 28))
    heads = sorted(s.id for s in graph.free_spaces() if s.groups > 1)
    plain = {s.id for s in graph.free_spaces() if s.groups == 1}
    x = torch.randn(16, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    calib = [(x, torch.zeros(16, dtype=torch.long))]
    for basis in ("weights", "activations"):
        al = ot(basis=basis).match(graph, a, b, calib)
        assert set(al.perms) == plain and al.info["unaligned"] == heads and len(heads) == 4
        with torch.no_grad():
            torch.testing.assert_close(permute_model(b, graph, al)(x), b(x), atol=1e-5,
                                       rtol=0)
    planted = random_permutation(graph, torch.Generator().manual_seed(2))
    planted.perms = {s: p for s, p in planted.perms.items() if s in plain}
    shuffled = permute_model(a, graph, planted)
    for basis in ("weights", "activations"):
        al = ot(basis=basis).match(graph, a, shuffled, calib)
        back = al.apply(graph, shuffled.state_dict())
        assert all(torch.equal(back[k], v) for k, v in a.state_dict().items()), basis
    soft = ot(reg=0.05).match(graph, a, b)
    assert set(soft.merges) == plain
    with torch.no_grad():
        assert torch.isfinite(permute_model(b, graph, soft)(x)).all()
