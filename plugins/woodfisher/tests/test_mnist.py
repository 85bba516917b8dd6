"""Real data: one-shot pruning of a trained MNIST MLP (784-128-128-10, 97.1% test top-1).

Figures measured on the 2-core development CPU with these exact settings (N = 1000
calibration images of the training split, damping 1e-5, blocks of 128)."""

import pytest
from weightlab import plugins, pruning


@pytest.fixture(scope="module")
def setup(mnist_mlp):
    dense, bundle = mnist_mlp
    return (dense, bundle.loader("test", batch_size=2000),
            bundle.loader("calibration", num_samples=2000, batch_size=500))


def _one_shot(setup, pruner, sparsity, normalizer=None, **values):
    dense, test, calibration = setup
    reg = plugins.registry()
    norm = reg.create("normalizers", normalizer) if normalizer else None
    return pruning.one_shot(dense, reg.create("pruners", pruner, values), sparsity,
                            evaluate_on=test, pruner_data=calibration, normalizer=norm,
                            calibration=calibration)


def test_woodfisher_beats_global_magnitude_at_95_percent(setup):
    """Without re-normalization, at 95% sparsity: WoodFisher 86.45% vs global magnitude 81.43%
    (measured; the OBS update matters: with update_scale=0 WoodFisher gets 80.97%)."""
    _, masks, wf = _one_shot(setup, "woodfisher", 0.95, samples=1000)
    _, _, gm = _one_shot(setup, "global_magnitude", 0.95)
    assert wf["sparsity"] == pytest.approx(0.95, abs=1e-5)
    assert gm["sparsity"] == pytest.approx(0.95, abs=1e-5)
    assert wf["dense"]["top1"] > 0.965
    assert wf["pruned"]["top1"] > 0.84
    assert wf["pruned"]["top1"] > gm["pruned"]["top1"] + 0.03
    stages = wf["pruner_report"]["stages"]
    assert set(stages) == {"gradients", "inverse", "scores", "update"}
    assert wf["pruner_report"]["samples"] == 1000


def test_repair_recovers_one_shot_pruned_accuracy(setup):
    """Global magnitude at 95%: 81.43% one-shot, 92.37% after REPAIR with the dense model as
    reference (measured; 2000 calibration images); the masks survive the folding."""
    if "repair" not in {e.name for e in plugins.registry().all("normalizers")}:
        pytest.skip("the repair plugin (normalizer 'repair') is not installed")
    model, masks, rec = _one_shot(setup, "global_magnitude", 0.95, normalizer="repair")
    assert rec["pruned"]["top1"] < 0.86
    assert rec["normalized"]["top1"] > rec["pruned"]["top1"] + 0.07
    assert rec["normalized"]["top1"] > 0.90
    assert pruning.masked_nonzeros(model, masks) == 0
    assert rec["sparsity"] == pytest.approx(0.95, abs=1e-5)
