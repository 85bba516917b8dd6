"""WoodFisher against an exact dense OBS computation in float64, the batched inverse against
the sequential Woodbury recursion and torch.linalg.inv, and the memory plan."""

import copy

import pytest
import torch
import torch.nn.functional as F
from weightlab import plugins, testing
from weightlab.errors import UsageError, WeightlabError
from weightlab_woodfisher.blocks import (
    BlockLayout,
    accumulate_gram,
    invert_blocks,
    woodbury_sequential,
)
from weightlab_woodfisher.gradients import stack_grads

NAMES = ["layers.1.weight", "layers.3.weight"]  # mlp depth 1 width 8 on digits: 512 + 80


def _setup(samples=300):
    net = testing.tiny_model("mlp", depth=1, width=8, seed=1).double()
    bundle = testing.tiny_data("digits")
    return net, bundle.loader("calibration", num_samples=samples, batch_size=128)


def _autograd_grads(net, loader):
    """Per-sample gradients the slow, obvious way: one backward pass per sample."""
    rows = []
    params = dict(net.named_parameters())
    for x, y in loader:
        for xi, yi in zip(x.double(), y, strict=True):
            net.zero_grad()
            F.cross_entropy(net(xi[None]), yi[None]).backward()
            rows.append(torch.cat([params[n].grad.flatten() for n in NAMES]))
    return torch.stack(rows)


def _reference_obs(w, g_np, damping, sparsity, same_block):
    """Dense OBS in float64: F = λI + GᵀG/N restricted to the block pattern, inverted with
    torch.linalg.inv; lowest ρ removed; δw = −F⁻¹ Σ_removed (w_q/[F⁻¹]_qq) e_q."""
    n, p = g_np.shape
    fisher = (g_np.T @ g_np / n) * same_block + damping * torch.eye(p, dtype=torch.float64)
    finv = torch.linalg.inv(fisher)
    rho = w.square() / (2 * finv.diagonal())
    removed = torch.sort(rho, stable=True).indices[:round(sparsity * p)]
    v = torch.zeros_like(w)
    v[removed] = w[removed] / finv.diagonal()[removed]
    w_new = w - finv @ v
    w_new[removed] = 0.0
    keep = torch.ones(p, dtype=torch.bool)
    keep[removed] = False
    return rho, keep, w_new


@pytest.mark.parametrize("block_size, span", [(592, True), (24, False)])
def test_matches_dense_obs_in_float64(block_size, span):
    """block 592 spanning layers = the full Fisher; block 24 within layers (512 = 21·24 + 8,
    so padding is exercised) = the block-diagonal of the same Fisher."""
    net, loader = _setup()
    g_np = _autograd_grads(copy.deepcopy(net), loader)
    params = dict(net.named_parameters())
    w = torch.cat([params[n].detach().flatten() for n in NAMES])
    idx = torch.arange(592)
    layer = (idx >= 512).long()
    within = torch.where(layer == 1, idx - 512, idx)
    block_id = within // block_size + 1000 * (0 if span else layer)
    same_block = (block_id[:, None] == block_id[None, :]).double()
    rho_ref, keep_ref, w_ref = _reference_obs(w, g_np, 1e-3, 0.6, same_block)

    pruner = plugins.registry().create("pruners", "woodfisher", {
        "block_size": block_size, "span_layers": span, "damping": 1e-3, "samples": 300})
    pruner.keep_scores = True
    masks = pruner.prune(net, 0.6, {}, loader)
    rho = torch.cat([pruner.last_scores[n].flatten() for n in NAMES])
    keep = torch.cat([masks[n].flatten() for n in NAMES])
    w_new = torch.cat([params[n].detach().flatten() for n in NAMES])
    assert pruner.last_report["samples"] == 300
    torch.testing.assert_close(rho, rho_ref, rtol=1e-6, atol=1e-12)
    assert torch.equal(keep, keep_ref)
    torch.testing.assert_close(w_new, w_ref, rtol=1e-6, atol=1e-9)
    assert torch.all(w_new[~keep] == 0)
    assert (w_new[keep] - w[keep]).abs().max() > 1e-3  # the OBS update moved the survivors


def test_torch_func_gradients_equal_autograd():
    net, loader = _setup(100)
    ref = _autograd_grads(copy.deepcopy(net), loader)
    fast = stack_grads(net, NAMES, loader, 100, chunk=32)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)


def test_batched_inverse_equals_sequential_woodbury():
    gen = torch.Generator().manual_seed(0)
    n, p, bs = 200, 60, 12
    g_np = torch.randn(n, p, generator=gen, dtype=torch.float64) * torch.linspace(0.01, 2, p,
                                                                                 dtype=torch.float64)
    layout = BlockLayout.build([p], bs)
    gram = torch.zeros(layout.num_blocks, bs, bs, dtype=torch.float64)
    for chunk in g_np.split(64):  # streamed accumulation = all at once
        accumulate_gram(gram, layout.to_blocks(chunk))
    batched = invert_blocks(gram, n, 1e-3, group=2)
    sequential = woodbury_sequential(layout.to_blocks(g_np), 1e-3)
    torch.testing.assert_close(batched, sequential, rtol=1e-9, atol=1e-9)


def test_inverse_matches_linalg_inv_when_n_far_exceeds_block():
    """N = 20000 ≫ B = 8 and λ = 1e-9: F⁻¹ ≈ (GᵀG/N)⁻¹ of the undamped empirical Fisher."""
    gen = torch.Generator().manual_seed(1)
    n, p, bs = 20_000, 24, 8
    mix = torch.randn(p, p, generator=gen, dtype=torch.float64)
    g_np = torch.randn(n, p, generator=gen, dtype=torch.float64) @ mix  # correlated entries
    layout = BlockLayout.build([p], bs)
    gram = torch.zeros(layout.num_blocks, bs, bs, dtype=torch.float64)
    accumulate_gram(gram, layout.to_blocks(g_np))
    ours = invert_blocks(gram, n, 1e-9)
    g_bnk = layout.to_blocks(g_np).permute(1, 0, 2)
    exact = torch.linalg.inv(g_bnk.transpose(1, 2) @ g_bnk / n)
    torch.testing.assert_close(ours, exact, rtol=1e-6, atol=1e-9)
    # float32 blocks (the default precision) stay close to the float64 answer
    gram32 = torch.zeros(layout.num_blocks, bs, bs)
    accumulate_gram(gram32, layout.to_blocks(g_np.float()))
    torch.testing.assert_close(invert_blocks(gram32, n, 1e-9).double(), exact, rtol=1e-3,
                               atol=1e-4)


def test_sparse_model_keeps_old_zeros_and_update_leaves_them_zero():
    net, loader = _setup()
    reg = plugins.registry()
    old = reg.create("pruners", "random", {"seed": 0}).prune(net, 0.5, {})
    pruner = reg.create("pruners", "woodfisher", {"block_size": 32, "damping": 1e-3,
                                                   "samples": 300})
    new = pruner.prune(net, 0.8, old, loader)
    params = dict(net.named_parameters())
    for n in NAMES:
        assert not (new[n] & ~old[n]).any()
        assert torch.all(params[n][~new[n]] == 0)
    total = sum(m.numel() for m in new.values())
    assert sum(int((~m).sum()) for m in new.values()) == round(0.8 * total)


def test_update_scale_zero_keeps_survivors_and_per_layer_selection():
    net, loader = _setup()
    dense = {n: p.detach().clone() for n, p in net.named_parameters()}
    masks = plugins.registry().create("pruners", "woodfisher", {
        "update_scale": 0, "selection": "per_layer", "damping": 1e-3, "samples": 300}
    ).prune(net, 0.75, {}, loader)
    params = dict(net.named_parameters())
    for n, m in masks.items():
        assert int((~m).sum()) == round(0.75 * m.numel())
        assert torch.equal(params[n][m], dense[n][m])


def test_memory_plan_refuses_and_names_what_fits():
    net, loader = _setup()
    pruner = plugins.registry().create("pruners", "woodfisher", {
        "block_size": 512, "memory_budget_gb": 0.0005, "samples": 300})  # 0.5 MB
    with pytest.raises(UsageError, match=r"block_size ≤ \d+ would fit"):
        pruner.prune(net, 0.5, {}, loader)
    small = plugins.registry().create("pruners", "woodfisher", {
        "block_size": 16, "memory_budget_gb": 0.0005, "samples": 300, "damping": 1e-3})
    small.prune(net, 0.5, {}, loader)
    plan = small.last_report["plan"]
    assert plan["grads_chunked"] and plan["grad_chunk"] < 300  # gradients in chunks to fit
    assert plan["mode"] == "resident" and plan["passes"] == 1
    assert set(small.last_report["stages"]) == {"gradients", "inverse", "scores", "update"}


def test_needs_data_and_valid_damping():
    net, _ = _setup()
    with pytest.raises(UsageError, match="needs calibration data"):
        plugins.registry().create("pruners", "woodfisher").prune(net, 0.5, {})
    with pytest.raises(UsageError, match="damping"):
        plugins.registry().create("pruners", "woodfisher", {"damping": 0})
    with pytest.raises(WeightlabError):
        invert_blocks(-torch.eye(4).repeat(2, 1, 1), 1, 1e-6)


def test_diag_fisher_scores_are_w2_times_mean_squared_gradient():
    net, loader = _setup()
    g_np = _autograd_grads(copy.deepcopy(net), loader)
    params = dict(net.named_parameters())
    w = torch.cat([params[n].detach().flatten() for n in NAMES])
    score = w.square() * g_np.square().mean(0)  # F_ii = (1/N) Σ_n g_n,i²
    removed = torch.sort(score, stable=True).indices[:round(0.6 * 592)]
    keep_ref = torch.ones(592, dtype=torch.bool)
    keep_ref[removed] = False
    by_magnitude = plugins.registry().create("pruners", "global_magnitude").prune(
        copy.deepcopy(net), 0.6, {})
    masks = plugins.registry().create("pruners", "diag_fisher", {"samples": 300}).prune(
        net, 0.6, {}, loader)
    assert torch.equal(torch.cat([masks[n].flatten() for n in NAMES]), keep_ref)
    overlap = sum(int((~masks[n] & ~by_magnitude[n]).sum()) for n in NAMES)
    assert overlap < 0.9 * round(0.6 * 592)  # the Fisher changes the choice (measured 276/355)
