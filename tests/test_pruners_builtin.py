"""The core's pruners (magnitude, global magnitude, random): exact counts, thresholds, old masks
kept; registered as built-ins, so an install without any plugin can prune."""

import copy

import pytest
import torch
from weightlab import plugins, testing
from weightlab.errors import UsageError


def _net():
    return testing.tiny_model("mlp", width=32, seed=0)  # 8×8 digits MLP: 64→32→32→32→10


def _pruner(name, **values):
    return plugins.registry().create("pruners", name, values)


def test_basic_pruners_are_builtins_and_second_order_ones_the_plugins():
    entries = {e.name: e.plugin for e in plugins.registry().all("pruners")}
    for name in ("magnitude", "global_magnitude", "random"):
        assert entries.get(name) == "builtin", name
    for name in ("diag_fisher", "woodfisher"):
        assert entries.get(name) == "woodfisher", name


def test_core_alone_can_prune():
    """No entry points loaded (the core installed alone): the built-in pruners are there."""
    from weightlab.plugins import load

    reg = load(entry_points=False).registry
    assert {e.name for e in reg.all("pruners")} == {"magnitude", "global_magnitude", "random"}
    net = _net()
    masks = reg.create("pruners", "global_magnitude").prune(net, 0.5, {})
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * total)


def test_magnitude_is_exact_per_layer_and_removes_the_smallest():
    net = _net()
    dense = {n: p.detach().clone() for n, p in net.named_parameters()}
    masks = _pruner("magnitude").prune(net, 0.7, {})
    assert set(masks) == {"layers.1.weight", "layers.3.weight", "layers.5.weight",
                          "layers.7.weight"}
    params = dict(net.named_parameters())
    for n, m in masks.items():
        assert int((~m).sum()) == round(0.7 * m.numel())
        assert float(dense[n].abs()[~m].max()) <= float(dense[n].abs()[m].min())
        assert torch.all(params[n][~m] == 0) and torch.equal(params[n][m], dense[n][m])
    assert torch.equal(params["layers.1.bias"], dense["layers.1.bias"])  # biases untouched


def test_global_magnitude_uses_one_threshold():
    net = _net()
    dense = {n: p.detach().abs().clone() for n, p in net.named_parameters()}
    masks = _pruner("global_magnitude").prune(net, 0.7, {})
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.7 * total)
    removed = max(float(dense[n][~m].max()) for n, m in masks.items() if (~m).any())
    kept = min(float(dense[n][m].min()) for n, m in masks.items() if m.any())
    assert removed <= kept
    per_layer = [float((~m).float().mean()) for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.1  # unlike magnitude, layers differ


def test_ties_are_broken_by_index_order():
    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    a = _pruner("global_magnitude").prune(copy.deepcopy(net), 0.5, {})
    b = _pruner("global_magnitude").prune(copy.deepcopy(net), 0.5, {})
    flat = torch.cat([m.flatten() for m in a.values()])
    n0 = round(0.5 * flat.numel())
    assert not flat[:n0].any() and flat[n0:].all()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["magnitude", "global_magnitude", "random"])
def test_pruning_a_sparse_model_keeps_old_zeros(name):
    net = _net()
    old = _pruner("random", seed=3).prune(net, 0.5, {})  # old zeros sit on large weights too
    new = _pruner(name).prune(net, 0.8, old)
    for n in old:
        assert not (new[n] & ~old[n]).any(), "an old zero came back"
    if name == "global_magnitude":
        total = sum(m.numel() for m in new.values())
        assert sum(int((~m).sum()) for m in new.values()) == round(0.8 * total)
    else:
        for m in new.values():
            assert int((~m).sum()) == round(0.8 * m.numel())
    lower = _pruner(name).prune(net, 0.3, new)  # a lower target cannot un-prune
    assert all(torch.equal(lower[n], new[n]) for n in new)


def test_random_is_seeded():
    a = _pruner("random", seed=1).prune(_net(), 0.6, {})
    b = _pruner("random", seed=1).prune(_net(), 0.6, {})
    c = _pruner("random", seed=2).prune(_net(), 0.6, {})
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_module_selection():
    net = _net()
    masks = _pruner("magnitude", skip_first=True, skip_last=True).prune(net, 0.5, {})
    assert set(masks) == {"layers.3.weight", "layers.5.weight"}
    masks = _pruner("magnitude", modules="layers.[13].*", exclude="*.3.*").prune(net, 0.5, {})
    assert set(masks) == {"layers.1.weight"}
    with pytest.raises(UsageError, match="layers.9"):
        _pruner("magnitude", modules="layers.9.weight").prune(net, 0.5, {})


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range_is_refused(sparsity):
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        _pruner("magnitude").prune(_net(), sparsity, {})


def test_score_pruners_reach_attention_input_projections():
    """nn.MultiheadAttention's packed in_proj_weight (Q, K, V: a bare parameter, not a Linear)
    is pruned like a linear: per layer exactly round(0.9 · 3E·E) of its 3·32·32 = 3072 weights
    go, the smallest |w| (re-stated: the 2765th smallest |w| is the largest removed); without
    ``attention`` (what obs, which reads each Linear's inputs, asks for) it is left out."""
    from weightlab import pruning

    net = testing.tiny_model("vit_d2_w32_p2_h4")
    w = net.blocks[0].attn.in_proj_weight.detach().abs().flatten()
    masks = _pruner("magnitude").prune(copy.deepcopy(net), 0.9, {})
    names = list(masks)
    assert names.index("blocks.0.attn.in_proj_weight") < names.index(
        "blocks.0.attn.out_proj.weight") and "blocks.1.attn.in_proj_weight" in names
    keep = masks["blocks.0.attn.in_proj_weight"]
    assert int((~keep).sum()) == round(0.9 * 3072)
    cut = w.sort().values[round(0.9 * 3072) - 1]
    assert (w[~keep.flatten()] <= cut).all() and (w[keep.flatten()] >= cut).all()
    assert "blocks.0.attn.in_proj_weight" in _pruner("global_magnitude").prune(
        copy.deepcopy(net), 0.5, {})
    assert not any("in_proj" in n for n in pruning.prunable_names(net))
