"""Fixtures of the obs plugin's tests."""

from __future__ import annotations

import pytest
from weightlab import checkpoint, testing
from weightlab.data.bundle import load_data


@pytest.fixture(scope="module")
def mnist_mlp():
    """The dense MNIST MLP 784-128-128-10 (2 epochs from seed 0; the same cached checkpoint
    the woodfisher tests use) and the MNIST bundle."""
    root = testing.shared_data_dir("MNIST")
    path = testing.trained("mlp", "mnist", data_dir=root, epochs=2, train={"lr": 0.05},
                           model_params={"width": 128, "depth": 2})[0]
    dense, _ = checkpoint.load_model(path)
    return dense, load_data("mnist", data_dir=root)
