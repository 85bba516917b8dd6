"""Streamed WoodFisher: the Fisher blocks in G groups, each built from the gradients of its own
parameters and inverted alone, twice (pass 1: diag(F⁻¹) → scores; pass 2: the OBS update).
It must give the masks and weights of the resident computation; its plan must stay under the
budget, and refuse only when not even a one-block group fits."""

import copy

import pytest
import torch
from weightlab import checkpoint, plugins, pruning, testing
from weightlab.data.bundle import load_data
from weightlab.errors import DataError, UsageError


@pytest.fixture(scope="module")
def mnist():
    root = testing.shared_data_dir("MNIST")
    path = testing.trained("mlp", "mnist", data_dir=root, epochs=2, train={"lr": 0.05},
                           model_params={"width": 128, "depth": 2})[0]
    dense, _ = checkpoint.load_model(path)
    return dense, load_data("mnist", data_dir=root).loader("calibration", num_samples=100,
                                                           batch_size=100)


@pytest.fixture(scope="module")
def digits_resnet():
    """A trained BatchNorm ResNet-8 (convs, 1×1 shortcuts) on the 8×8 digits."""
    path = testing.trained("cifar_resnet8", "digits", epochs=1,
                           train={"lr": 0.05, "batch_size": 64})[0]
    dense, _ = checkpoint.load_model(path)
    return dense, load_data("digits").loader("calibration", num_samples=48, batch_size=48)


def _prune(dense, loader, sparsity=0.9, **values):
    model = copy.deepcopy(dense)
    pruner = plugins.registry().create("pruners", "woodfisher", values)
    masks = pruner.prune(model, sparsity, {}, loader)
    return model, masks, pruner.last_report


def _same(a, b):
    """(masks equal, max |Δ| over every weight and buffer)."""
    (ma, ka), (mb, kb) = a, b
    equal = ka.keys() == kb.keys() and all(torch.equal(ka[n], kb[n]) for n in ka)
    sb = mb.state_dict()
    return equal, max(float((t - sb[k]).abs().max()) for k, t in ma.state_dict().items())


@pytest.mark.parametrize("values, group_counts", [
    ({"block_size": 64}, (2, 4)),
    ({"block_size": 50, "span_layers": True, "selection": "per_layer", "update_scale": 0.5},
     (3,)),
])
def test_streamed_equals_resident_on_mnist(mnist, values, group_counts):
    """MNIST MLP 784-128-128-10 (118,016 weights), N = 100, 90% sparsity; the groups cut the
    first layer's blocks (a parameter straddling groups; with span_layers blocks straddle
    layers too). Same gradient chunk on both sides (50: the Gram sums in the same order).
    Measured: masks identical, max |Δw| = 0.0 (bitwise) in every case."""
    dense, loader = mnist
    values = {"samples": 100, "grad_chunk": 50, **values}
    model, masks, rep = _prune(dense, loader, groups=1, **values)
    assert rep["plan"]["mode"] == "resident" and rep["gradient_passes"] == 1
    for groups in group_counts:
        s_model, s_masks, s_rep = _prune(dense, loader, groups=groups, **values)
        equal, diff = _same((s_model, s_masks), (model, masks))
        assert equal
        assert diff <= 1e-7
        plan = s_rep["plan"]
        assert (plan["mode"], plan["groups"], plan["passes"]) == ("streamed", groups, 2 * groups)
        assert s_rep["gradient_passes"] == 2 * groups
        assert len(plan["group_bounds"]) == groups + 1
        assert {"pass2_gradients", "pass2_inverse"} <= set(s_rep["stages"])
    assert testing.sparsity(masks) == pytest.approx(0.9, abs=1e-5)


def test_streamed_equals_resident_on_a_batchnorm_resnet(digits_resnet):
    """Trained cifar_resnet8 on digits (78,042 weights in convs, shortcuts and the head;
    BatchNorm in eval mode), N = 48, blocks of 32, 3 groups: identical masks, max |Δw| = 0.0
    (measured). Without the OBS update (update_scale = 0) pass 2 is skipped: 3 passes."""
    dense, loader = digits_resnet
    values = {"samples": 48, "block_size": 32, "damping": 1e-4, "grad_chunk": 48}
    ref = _prune(dense, loader, 0.8, **values)
    streamed = _prune(dense, loader, 0.8, groups=3, **values)
    equal, diff = _same(streamed[:2], ref[:2])
    assert equal and diff <= 1e-7
    assert streamed[2]["gradient_passes"] == 6
    model, masks, rep = _prune(dense, loader, 0.8, groups=3, update_scale=0, **values)
    assert rep["plan"]["passes"] == rep["gradient_passes"] == 3
    assert "pass2_gradients" not in rep["stages"]
    assert torch.equal(torch.cat([m.flatten() for m in masks.values()]),
                       torch.cat([m.flatten() for m in ref[1].values()]))  # same scores


def test_streamed_sweep_equals_separate_runs_and_checks_its_data(mnist):
    """``pruning.sweep`` with a streamed pruner: ``analyze`` runs pass 1 once and holds
    diag(F⁻¹) only (no block); each sparsity runs pass 2 (3 passes) and equals a separate
    streamed one-shot run (torch.equal) and the resident result. Pass 2 over other samples
    than pass 1 is refused in one line."""
    dense, loader = mnist
    values = {"samples": 100, "block_size": 64, "groups": 3, "grad_chunk": 50}
    reg = plugins.registry()
    pruner = reg.create("pruners", "woodfisher", values)
    kept = []
    analyze = pruner.analyze
    pruner.analyze = lambda *a: kept.append(analyze(*a)) or kept[-1]
    swept = {}
    records = pruning.sweep(dense, pruner, [0.5, 0.95], pruner_data=loader,
                            on_result=lambda s, m, k, r: swept.setdefault(s, (m, k)))
    (analysis,) = kept
    assert "finv" not in analysis.stats and analysis.stats["diag"].shape == (1844, 64)
    assert records[0]["pruner_report"]["analysis_stages"]["gradients"]["seconds"] > 0
    assert [r["pruner_report"]["gradient_passes"] for r in records] == [3, 3]  # pass 2 only
    separate = pruning.one_shot(dense, reg.create("pruners", "woodfisher", values), 0.95,
                                pruner_data=loader)
    assert _same(swept[0.95], separate[:2]) == (True, 0.0)
    for s in (0.5, 0.95):
        resident = pruning.one_shot(dense, reg.create("pruners", "woodfisher",
                                                      {**values, "groups": 1}), s,
                                    pruner_data=loader)
        equal, diff = _same(swept[s], resident[:2])
        assert equal and diff <= 1e-7
    other = load_data("mnist", data_dir=testing.shared_data_dir("MNIST")).loader(
        "calibration", num_samples=100, batch_size=100, seed=1)
    with pytest.raises(DataError, match="needs the same samples every time") as err:
        pruner.prune(copy.deepcopy(dense), 0.5, {}, other, analysis=analysis)
    assert len(str(err.value).splitlines()) == 1


def _digits_mlp():
    net = testing.tiny_model("mlp", depth=1, width=8, seed=1).double()  # 512 + 80 weights
    return net, testing.tiny_data("digits").loader("calibration", num_samples=100,
                                                   batch_size=128)


def test_plan_streams_under_a_small_budget_and_refuses_below_one_block():
    """Budget 524.3 KiB, float64 blocks: 6 blocks of 110 (567.2 KiB) do not fit resident;
    streamed in 6 one-block groups the planned peak is 429,440 B (the inverse stage) and the
    run matches resident pruning under a large budget. Refused only when one block of 512
    (2 MiB + workspace) cannot fit: the message names block_size ≤ 115, which then runs."""
    net, loader = _digits_mlp()
    reg = plugins.registry()
    small = {"samples": 100, "damping": 1e-3, "memory_budget_gb": 0.0005}
    budget = int(0.0005 * 2 ** 30)
    pruner = reg.create("pruners", "woodfisher", {**small, "block_size": 110})
    plan = pruner.plan_for(net, loader)
    assert plan["mode"] == "streamed" and plan["groups"] > 1
    assert plan["blocks_bytes"] > budget  # resident would not fit
    assert plan["planned_peak_bytes"] <= budget
    assert all(v <= budget for v in plan["peak_bytes"].values())
    streamed = copy.deepcopy(net)
    masks = pruner.prune(streamed, 0.7, {}, loader)
    assert pruner.last_report["plan"] == plan
    resident = copy.deepcopy(net)
    ref = reg.create("pruners", "woodfisher", {**small, "block_size": 110,
                                                "memory_budget_gb": 1.0}).prune(resident, 0.7,
                                                                                {}, loader)
    equal, diff = _same((streamed, masks), (resident, ref))
    assert equal and diff <= 1e-12

    with pytest.raises(UsageError, match="groups=0 streams them"):  # forced resident
        reg.create("pruners", "woodfisher", {**small, "block_size": 110, "groups": 1}
                   ).plan_for(net, loader)
    with pytest.raises(UsageError, match="groups=2: a group of 3 Fisher blocks"):
        reg.create("pruners", "woodfisher", {**small, "block_size": 110, "groups": 2}
                   ).plan_for(net, loader)
    with pytest.raises(UsageError, match=r"not even one Fisher block of 512×512 fits: .* "
                                         r"block_size ≤ (\d+) would fit") as err:
        reg.create("pruners", "woodfisher", {**small, "block_size": 512}).plan_for(net, loader)
    assert len(str(err.value).splitlines()) == 1
    fit = int(str(err.value).rsplit("≤ ", 1)[1].split()[0])
    assert 64 < fit < 512
    reg.create("pruners", "woodfisher", {**small, "block_size": fit}).prune(
        copy.deepcopy(net), 0.7, {}, loader)
    with pytest.raises(UsageError, match="no block size fits"):
        reg.create("pruners", "woodfisher", {**small, "block_size": 16,
                                             "memory_budget_gb": 1e-5}).plan_for(net, loader)


def test_resnet50_with_blocks_of_2000_plans_a_streamed_run():
    """torchvision ResNet-50 (10 classes: 23,475,392 prunable weights), B = 2000: 11,768 blocks,
    188 GB resident in float32. Planned (nothing computed): 2 GiB → 182 groups (364 passes);
    70 GiB (an H100) → 4 groups (8 passes), chunks of 156–199 samples (float32 blocks; the
    default precision picks float64 for N < B)."""
    net = plugins.registry().create("models", "resnet50").build((3, 32, 32), 10).eval()
    loader = load_data("synthetic").loader("calibration", num_samples=8, batch_size=8)
    reg = plugins.registry()
    for budget_gb, groups in ((2, 182), (70, 4)):
        budget = int(budget_gb * 2 ** 30)
        plan = reg.create("pruners", "woodfisher", {
            "block_size": 2000, "samples": 1000, "memory_budget_gb": budget_gb,
            "precision": "float32"}).plan_for(net, loader)
        assert plan["num_blocks"] == 11768 and plan["blocks_bytes"] == 11768 * 2000 ** 2 * 4
        assert (plan["mode"], plan["groups"], plan["passes"]) == ("streamed", groups,
                                                                  2 * groups)
        assert plan["planned_peak_bytes"] <= budget
        assert plan["group_bytes"] <= 0.75 * budget
    assert min(plan["group_chunks"]) >= 150
    # the default precision (auto) plans float64 blocks here, since N = 1000 < B = 2000
    auto = reg.create("pruners", "woodfisher", {"block_size": 2000, "samples": 1000,
                                                "memory_budget_gb": 70}).plan_for(net, loader)
    assert auto["blocks_bytes"] == 11768 * 2000 ** 2 * 8 and auto["mode"] == "streamed"
