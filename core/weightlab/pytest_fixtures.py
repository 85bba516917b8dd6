"""pytest fixtures that plugin test suites share; a plugin's ``conftest.py`` imports the ones it
uses::

    from weightlab.pytest_fixtures import digits_calibration, mnist, pytest_configure  # noqa: F401

Importing this module imports pytest: only test code does.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    """One torch thread, as in the core tests (the shared 2-core machine);
    ``WEIGHTLAB_TEST_THREADS`` sets another count."""
    import torch

    torch.set_num_threads(int(os.environ.get("WEIGHTLAB_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def digits_calibration():
    """512 calibration images of the digits data that ship with weightlab."""
    from weightlab import testing

    return testing.calibration("digits", num_samples=512)


@pytest.fixture(scope="session")
def mnist():
    """Two MNIST MLPs (3×512, 2 epochs, lr 0.05, seeds 0 and 1; cached by weightlab.testing,
    the pair core's test_matching uses), the test loader and 5,000 calibration images
    (MNIST from the shared data directory; skipped when absent)."""
    from weightlab import testing

    return testing.mnist_mlp_pair(5000)
