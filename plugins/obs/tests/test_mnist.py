"""Real data: one-shot pruning of a trained MNIST MLP (784-128-128-10; dense 97.22% test top-1,
test loss 0.0868), obs against magnitude pruning at the same pattern, no re-normalization
(the MLP has no norms) and no retraining.

Figures measured on the 2-core development CPU with these exact settings: 1000 calibration
images of the training split, damp 0.01, blocks of 128, sequential.

| pattern | magnitude top-1 / loss | obs top-1 / loss |
|---|---|---|
| 2:4 | 96.72% / 0.155 | 96.96% / 0.097 |
| 90% unstructured (per layer) | 82.63% / 0.835 | 88.57% / 0.401 |
"""

import copy

import pytest
import torch
from weightlab import plugins, pruning
from weightlab.metrics import evaluate

# the fixture trains the MLP on MNIST when the test cache is cold (47–125 s on the 2-core CPU;
# cached afterwards and shared with the woodfisher tests); the tests themselves take ~7 s
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(mnist_mlp):
    dense, bundle = mnist_mlp
    return (dense, bundle.loader("test", batch_size=2000),
            bundle.loader("calibration", num_samples=1000, batch_size=500))


def _obs(setup, sparsity, **values):
    dense, test, calibration = setup
    return pruning.one_shot(dense, plugins.registry().create("pruners", "obs", values),
                            sparsity, evaluate_on=test, pruner_data=calibration)


def _magnitude_two_of_four(dense):
    """2:4 by magnitude: in every row, the 2 smallest |w| of each 4 consecutive inputs go."""
    net = copy.deepcopy(dense)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                groups = p.abs().view(p.shape[0], -1, 4)
                rank = groups.argsort(dim=2, stable=True).argsort(dim=2)
                p.mul_((rank >= 2).view_as(p))
    return net


def test_obs_two_of_four_keeps_the_loss_magnitude_loses(setup):
    """2:4 (50%): test loss 0.097 against magnitude's 0.155 (dense 0.087: obs adds a sixth of
    magnitude's increase); top-1 96.96% against 96.72% (+0.24 points, asserted ≥)."""
    dense, test, _ = setup
    model, masks, rec = _obs(setup, 0.5, pattern="2:4")
    mag = evaluate(_magnitude_two_of_four(dense), test)
    assert rec["dense"]["top1"] > 0.97
    for name, keep in masks.items():
        assert ((~keep).view(keep.shape[0], -1, 4).sum(-1) == 2).all(), name
    assert rec["pruned"]["loss"] < mag["loss"] - 0.04
    assert rec["pruned"]["loss"] < rec["dense"]["loss"] + 0.02
    assert rec["pruned"]["top1"] >= mag["top1"] and rec["pruned"]["top1"] > 0.965


def test_obs_beats_magnitude_at_90_percent(setup):
    """90% unstructured, each layer at 90% (as ``magnitude``). The test loss is what OBS
    minimizes layer by layer and it is robustly lower: 0.401 against 0.835 and 0.398 against
    0.710 on two trainings of this MLP (the test cache retrains when the training code
    changes; asserted < 0.6×). Top-1 is not robust: 88.57% against 82.63% on the first model,
    87.72% against 88.64% on the second (asserted: within 2 points, and > 86%)."""
    dense, test, _ = setup
    _, _, rec = _obs(setup, 0.9)
    _, _, mag = pruning.one_shot(dense, plugins.registry().create("pruners", "magnitude"), 0.9,
                                 evaluate_on=test)
    assert rec["sparsity"] == pytest.approx(0.9, abs=1e-5) == mag["sparsity"]
    assert all(s == pytest.approx(0.9, abs=1e-4) for s in rec["layer_sparsity"].values())
    assert rec["pruned"]["loss"] < 0.6 * mag["pruned"]["loss"]
    assert rec["pruned"]["top1"] > mag["pruned"]["top1"] - 0.02
    assert rec["pruned"]["top1"] > 0.86
    errors = [v["error"] for v in rec["pruner_report"]["layers"].values()]
    assert all(0 < e < 0.3 for e in errors) and rec["pruner_report"]["samples"] == 1000
