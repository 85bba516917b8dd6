"""The ``mudsc`` matcher: its weight similarity re-stated, the α = 1 and α = 0 limits against
weight and activation matching, planted permutations (MLP, ResNet-8, ViT heads) recovered,
and one-line errors."""

from __future__ import annotations

import pytest
import torch
from weightlab import plugins, testing
from weightlab.alignment import permute_model, random_permutation
from weightlab.errors import ParamError, UsageError
from weightlab.matching.activation import activation_matching
from weightlab.matching.assignment import block_permutation, solve_assignment
from weightlab.matching.weight import weight_matching


def mudsc(**params):
    return plugins.registry().create("matchers", "mudsc", params)


def small_mlp(seed: int):
    return testing.tiny_model("mlp", (1, 8, 8), seed=seed, depth=2, width=64)


def same_perms(x, y) -> bool:
    return x.perms.keys() == y.perms.keys() and all(torch.equal(x.perms[s], y.perms[s])
                                                    for s in x.perms)


def weight_vectors(state: dict, layer: int, next_layer: int) -> torch.Tensor:
    """Hidden unit i of the MLP's ``layers.{layer}`` as one vector: its incoming weights, its
    bias and its outgoing weights (column i of the next layer), as the authors concatenate
    every tensor of a permutation group."""
    return torch.cat([state[f"layers.{layer}.weight"], state[f"layers.{layer}.bias"][:, None],
                      state[f"layers.{next_layer}.weight"].T], 1).double()


def test_weight_similarity_is_the_correlation_of_the_weight_vectors(digits_calibration):
    """α = 1, init=identity: at the end of the descent every hidden space of a 2×64 MLP pair
    (random, seeds 0/1) is assigned optimally on the Pearson correlation of the concatenated
    weight vectors of A and of B aligned (re-stated with torch.corrcoef and scipy): the
    normalization of S_p by fixed row moments is that correlation. With cosine the same
    holds for the cosine of the vectors."""
    a, b = small_mlp(0), small_mlp(1)
    graph = testing.trace(a)
    sa = a.state_dict()
    for kind in ("correlation", "cosine"):
        al = mudsc(alpha=1.0, init="identity", weight_similarity=kind).match(graph, a, b)
        assert al.info["converged"]
        sb = al.apply(graph, b.state_dict())
        for space, (layer, nxt) in zip(graph.free_spaces(), ((1, 3), (3, 5)), strict=True):
            va, vb = weight_vectors(sa, layer, nxt), weight_vectors(sb, layer, nxt)
            if kind == "correlation":
                sim = torch.corrcoef(torch.cat([va, vb]))[:64, 64:]
            else:
                sim = (va / va.norm(dim=1, keepdim=True)) @ (vb / vb.norm(dim=1, keepdim=True)).T
            assert torch.equal(solve_assignment(sim), torch.arange(64)), (kind, space.id)
        assert not torch.equal(al.perms[1], torch.arange(64))  # it did move B


@pytest.mark.parametrize("seeds", [(0, 1), (2, 3)])
def test_alpha_one_is_weight_matching_and_alpha_zero_activation_matching(seeds,
                                                                       digits_calibration):
    """Random 2×64 MLP pairs on 512 digits. α = 1 with Git Re-Basin's unnormalized inner
    product from the identity is core's weight matching (the same permutations, bit for bit);
    α = 0 is activation matching — with correlation (the authors' S_act) from either start,
    and with inner against activation matching's default. The default α = ½ differs from
    both on these pairs (measured: in 2 of 2 spaces)."""
    a, b = small_mlp(seeds[0]), small_mlp(seeds[1])
    graph = testing.trace(a)
    data = digits_calibration
    wm = weight_matching(graph, a.state_dict(), b.state_dict())
    got = mudsc(alpha=1.0, weight_similarity="inner", init="identity").match(graph, a, b)
    assert same_perms(got, wm) and got.info["sweeps"] == wm.info["sweeps"]
    corr = activation_matching(graph, a, b, data, 5000, "correlation")
    for init in ("activation", "identity"):
        assert same_perms(mudsc(alpha=0.0, init=init).match(graph, a, b, data), corr)
    inner = activation_matching(graph, a, b, data, 5000, "inner")
    assert same_perms(mudsc(alpha=0.0, activation_similarity="inner").match(graph, a, b, data),
                      inner)
    half = mudsc().match(graph, a, b, data)
    assert not same_perms(half, corr) and not same_perms(half, wm)
    assert half.info["observations"] == 512 and half.info["alpha"] == 0.5


@pytest.mark.parametrize("name,shape", [("mlp", (1, 8, 8)), ("cifar_resnet8", (1, 8, 8))])
def test_planted_permutation_is_recovered_exactly(name, shape, digits_calibration):
    """B = A with every free space randomly permuted (ResNet-8 with random BatchNorm
    statistics and affine parameters: residual spaces, conv entries): mudsc at the default
    α = ½ on 512 digits maps B back onto A bit for bit, and B aligned computes what B does."""
    a = testing.randomize_norms(testing.tiny_model(name, shape, seed=0), 0).eval()
    graph = testing.trace(a, shape)
    b = permute_model(a, graph, random_permutation(graph, torch.Generator().manual_seed(3)))
    al = mudsc().match(graph, a, b, digits_calibration)
    assert al.is_permutation and al.info["converged"]
    back = al.apply(graph, b.state_dict())
    assert all(torch.equal(back[k], v) for k, v in a.state_dict().items())
    testing.assert_same_function(b, permute_model(b, graph, al), input_shape=shape)


def test_vit_heads_are_matched_as_blocks():
    """A random ViT of core's family (vit_d2_w32_p7_h4: 2 blocks, 4 heads of 8, 7 free spaces)
    and a copy with a planted permutation of every space (heads moved, channels moved within
    heads, query·key and value·output tied): mudsc at α = ½ and α = 0.9 on 64 random
    28×28 inputs recovers every tensor exactly. Between two different random ViTs every
    head space's permutation moves whole heads, the same head order in tied spaces."""
    a = testing.tiny_model("vit_d2_w32_p7_h4", (1, 28, 28), seed=1).eval()
    graph = testing.trace(a, (1, 28, 28))
    assert sum(s.groups > 1 for s in graph.free_spaces()) == 4
    b = permute_model(a, graph, random_permutation(graph, torch.Generator().manual_seed(2)))
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    data = [(x, torch.zeros(64, dtype=torch.long))]
    for alpha in (0.5, 0.9):
        back = mudsc(alpha=alpha).match(graph, a, b, data).apply(graph, b.state_dict())
        assert all(torch.equal(back[k], v) for k, v in a.state_dict().items()), alpha
    c = testing.tiny_model("vit_d2_w32_p7_h4", (1, 28, 28), seed=5).eval()
    al = mudsc().match(graph, a, c, data)
    for s in graph.free_spaces():
        if s.groups > 1:
            tau = block_permutation(al.perms[s.id], s.groups)
            assert torch.equal(tau, block_permutation(al.perms[s.tie], s.groups))
    testing.assert_same_function(c, permute_model(c, graph, al), input_shape=(1, 28, 28))


def test_errors_are_one_line():
    """Data is needed unless α = 1 from the identity; α outside [0, 1] and an unknown
    similarity are parameter errors naming the field."""
    a, b = small_mlp(0), small_mlp(1)
    graph = testing.trace(a)
    with pytest.raises(UsageError, match="needs calibration data") as e:
        mudsc().match(graph, a, b)
    assert len(str(e.value).splitlines()) == 1
    assert not mudsc(alpha=1.0, init="identity").needs_data and mudsc(alpha=1.0).needs_data
    with pytest.raises(ParamError, match="alpha"):
        mudsc(alpha=1.5)
    with pytest.raises(ParamError, match="weight_similarity"):
        mudsc(weight_similarity="l2")
