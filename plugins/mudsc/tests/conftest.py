"""Fixtures of the mudsc plugin's tests: small models on the digits data that ship with weightlab
and the cached MNIST MLP pair (MNIST from ../shared/data; skipped when absent)."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    """One torch thread, as in the core tests (the shared 2-core machine)."""
    torch.set_num_threads(int(os.environ.get("WEIGHTLAB_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def digits_calibration():
    from weightlab import testing

    return testing.calibration("digits", num_samples=512)


@pytest.fixture(scope="session")
def mnist():
    """Two MNIST MLPs (3×512, 2 epochs, lr 0.05, seeds 0 and 1; cached by weightlab.testing,
    the pair core's test_matching uses), the test loader and 5,000 calibration images."""
    from weightlab import testing

    return testing.mnist_mlp_pair(5000)
