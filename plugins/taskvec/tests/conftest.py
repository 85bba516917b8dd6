"""Fixtures of the taskvec plugin's tests: a trained MNIST base and three copies fine-tuned from
it with different seeds (the set-up of ../scripts/mnist_table.py, loaded from there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from weightlab.pytest_fixtures import pytest_configure  # noqa: F401


def _table_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "mnist_table.py"
    spec = importlib.util.spec_from_file_location("taskvec_mnist_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def mnist_table():
    return _table_script()


@pytest.fixture(scope="session")
def mnist_ingredients(mnist_table):
    """(data root, base checkpoint, three fine-tuned checkpoints)."""
    from weightlab import testing

    root = testing.shared_data_dir("MNIST")
    base, tuned = mnist_table.ingredients(root)
    return root, base, tuned
