"""``mudsc`` with ``mode=zip``: α = 0 is ZipIt!, a planted permutation is zipped back onto
itself, the joint merge is a joint matcher's, and head spaces are refused in one line."""

from __future__ import annotations

import torch
from weightlab import plugins, testing
from weightlab.alignment import permute_model, random_permutation
from weightlab_zipit.joint import merged_state


def matcher(name, **params):
    return plugins.registry().create("matchers", name, params)


def test_alpha_zero_is_zipit(digits_calibration):
    """Random 2×64 MLPs (seeds 0/1), 512 digits: mode=zip at α = 0 zips on the activation
    correlation alone, which is the zipit matcher with the same a, b (identical merge and
    unmerge matrices in every space); at α = ½ the weights change some space's merge."""
    a, b = (testing.tiny_model("mlp", (1, 8, 8), seed=s, depth=2, width=64) for s in (0, 1))
    graph = testing.trace(a)
    data = digits_calibration
    zipit = matcher("zipit", a=0.5, b=1.0, samples=5000).match(graph, a, b, data)
    zero = matcher("mudsc", mode="zip", alpha=0.0).match(graph, a, b, data)
    assert zero.info["sweeps"] == 1 and zero.info["converged"]
    for sid, (m, u) in zipit.merges.items():
        assert torch.equal(zero.merges[sid][0], m) and torch.equal(zero.merges[sid][1], u)
    half = matcher("mudsc", mode="zip").match(graph, a, b, data)
    assert any(not torch.equal(half.merges[s][1], u) for s, (_, u) in zipit.merges.items())
    m = matcher("mudsc", mode="zip")
    assert m.joint and m.pairwise_only and not matcher("mudsc").joint


def test_planted_permutation_zips_back_to_the_model(digits_calibration):
    """B = A (2×64 MLP) with every free space permuted: at the default α = ½, a = 0.5,
    b = 1 every unit of A is zipped with its own copy in B (similarity 1 in both spaces, above
    any other pair), so the merged model is A (max |Δ| < 1e-6 over every tensor)."""
    a = testing.tiny_model("mlp", (1, 8, 8), seed=0, depth=2, width=64).eval()
    graph = testing.trace(a)
    b = permute_model(a, graph, random_permutation(graph, torch.Generator().manual_seed(3)))
    al = matcher("mudsc", mode="zip").match(graph, a, b, digits_calibration)
    merged = merged_state([a, b], graph, al)
    err = max(float((merged[k] - v).abs().max()) for k, v in a.state_dict().items())
    assert err < 1e-6


def test_zip_merges_a_vit_with_its_planted_copy_head_by_head():
    """A one-block ViT (2 heads of 8) and a copy with a random permutation of every free space,
    heads included: mode=zip matches heads as blocks (value·output zipped within the matched
    heads, query·key permuted) and the merge at ½ gives the model's tensors back (measured
    max |Δ| 0.0; bound 1e-6)."""
    a = testing.tiny_model("vit_d1_w16_p7_h2", (1, 28, 28), seed=0).eval()
    graph = testing.trace(a, (1, 28, 28))
    assert any(s.groups > 1 for s in graph.free_spaces())
    b = permute_model(a, graph, random_permutation(graph, torch.Generator().manual_seed(3)))
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    al = matcher("mudsc", mode="zip").match(graph, a, b, [(x, torch.zeros(64).long())])
    merged = merged_state([a, b], graph, al)
    err = max(float((merged[k] - v).abs().max()) for k, v in a.state_dict().items())
    assert err < 1e-6
