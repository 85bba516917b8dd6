"""Real data, convolutions with BatchNorm and residual additions: a cifar_resnet8 trained on
scikit-learn's 8×8 digits (10 epochs, lr 0.05; 98.61% test top-1 on the 360 test images),
pruned in one shot with every conv/linear weight but the first (its 1 input channel × 9 kernel
positions is no multiple of 4), then optionally a BatchNorm reset (plugin repair).

Measured on the 2-core development CPU (1000 calibration images, obs defaults):

| pattern | magnitude | + reset_bn | obs | + reset_bn |
|---|---|---|---|---|
| 80% per layer | 30.00% | 88.06% | 69.17% | 91.94% |
| 2:4 | 94.72% | — | 98.06% | — |
"""

import copy

import pytest
import torch
from torch import nn
from weightlab import checkpoint, plugins, pruning, testing
from weightlab.data.bundle import load_data
from weightlab.metrics import evaluate

pytestmark = pytest.mark.slow  # trains the ResNet on a cold cache (~16 s)


@pytest.fixture(scope="module")
def setup():
    path = testing.trained("cifar_resnet8", "digits", models=1, epochs=10, train={"lr": 0.05})[0]
    dense, _ = checkpoint.load_model(path)
    bundle = load_data("digits")
    return (dense, bundle.loader("test", batch_size=1000),
            bundle.loader("calibration", num_samples=1000, batch_size=500))


def _run(setup, pruner, sparsity, normalizer=None, **values):
    dense, test, calibration = setup
    reg = plugins.registry()
    norm = reg.create("normalizers", normalizer) if normalizer else None
    return pruning.one_shot(dense, reg.create("pruners", pruner, {"skip_first": True, **values}),
                            sparsity, evaluate_on=test, pruner_data=calibration,
                            normalizer=norm, calibration=calibration)[2]


def test_obs_beats_magnitude_at_80_percent_with_and_without_bn_reset(setup):
    """80%, one shot: obs 69.2% against magnitude's 30.0%, and 54.2% against 36.9% on a second
    training of this ResNet (the test cache retrains when the training code changes; asserted
    +10 points, and a lower loss: 1.32 against 1.85 on the second). After a BatchNorm reset
    the order is not robust: 91.9% against 88.1% on the first, 88.6% against 91.7% on the
    second (asserted: both > 85%)."""
    if "reset_bn" not in {e.name for e in plugins.registry().all("normalizers")}:
        pytest.skip("the repair plugin (normalizer 'reset_bn') is not installed")
    obs = _run(setup, "obs", 0.8, "reset_bn")
    mag = _run(setup, "magnitude", 0.8, "reset_bn")
    assert obs["dense"]["top1"] > 0.98 and obs["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert obs["pruned"]["top1"] > mag["pruned"]["top1"] + 0.10
    assert obs["pruned"]["loss"] < mag["pruned"]["loss"]
    assert min(obs["normalized"]["top1"], mag["normalized"]["top1"]) > 0.85
    assert len(obs["pruner_report"]["layers"]) == 9  # 8 convs (2 shortcuts) + head; stem dense


def test_obs_two_of_four_on_convolutions(setup):
    """2:4 on every conv (along input channels at each kernel position) and the head: obs
    98.06% against magnitude 2:4's 94.72% (asserted +2 points), dense 98.61%."""
    dense, test, _ = setup
    rec = _run(setup, "obs", 0.5, pattern="2:4")
    mag = copy.deepcopy(dense)
    first = next(n for n, m in mag.named_modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        for name, m in mag.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and name != first:
                w = m.weight.movedim(1, -1)  # (out, *kernel, in): groups along input channels
                rank = w.abs().reshape(-1, 4).argsort(dim=1, stable=True).argsort(dim=1)
                m.weight.copy_((w * (rank >= 2).view_as(w)).movedim(-1, 1))
    mag_top1 = evaluate(mag, test)["top1"]
    assert rec["sparsity"] == 0.5
    assert rec["pruned"]["top1"] > mag_top1 + 0.02
    assert rec["pruned"]["top1"] > rec["dense"]["top1"] - 0.015
