"""Fixtures of the sparse-soup tests: one torch thread (the shared 2-core machine), the
in-process CLI, and a small trained digits MLP to run pipelines on."""

from __future__ import annotations

import pytest
from weightlab.pytest_fixtures import pytest_configure  # noqa: F401


@pytest.fixture
def cli(capsys):
    """The CLI run in-process (weightlab_cli.testing.CLI)."""
    from weightlab_cli.testing import CLI

    return CLI(capsys)


@pytest.fixture(scope="session")
def digits_mlp():
    """A dense MLP trained on scikit-learn's digits (ships with weightlab; cached)."""
    from weightlab import testing

    return testing.trained("mlp", "digits", models=1, epochs=4, train={"lr": 0.05},
                           model_params={"width": 64, "depth": 2})[0]
