"""Fixtures of the nmerge plugin's tests: K permuted copies of one small MLP, and four cached
MNIST MLPs trained from different seeds (MNIST from ../shared/data; skipped when absent)."""

from __future__ import annotations

import pytest
import torch
from weightlab.pytest_fixtures import pytest_configure  # noqa: F401


@pytest.fixture(scope="session")
def planted():
    """An MLP (8×8 digits input, 3 hidden layers of 32) and K = 4 copies, each with a random
    permutation of every hidden space (seed 0); the first copy is permuted too."""
    from weightlab import testing
    from weightlab.alignment import permute_model, random_permutation

    net = testing.tiny_model("mlp", depth=3, width=32).eval()
    graph = testing.trace(net)
    gen = torch.Generator().manual_seed(0)
    perms = [random_permutation(graph, gen) for _ in range(4)]
    return {"net": net, "graph": graph, "perms": perms,
            "models": [permute_model(net, graph, p) for p in perms]}


@pytest.fixture(scope="session")
def mnist4():
    """Four MNIST MLPs (3×512, 2 epochs, lr 0.05, seeds 0–3; cached by weightlab.testing) and
    the 10,000 test images."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import testing
    from weightlab.data.bundle import load_data

    root = testing.shared_data_dir("MNIST")
    paths = testing.trained("mlp", "mnist", models=4, data_dir=root, epochs=2,
                            train={"lr": 0.05})
    models = [ckpt_io.load_model(p)[0].eval() for p in paths]
    data = load_data("mnist", data_dir=root)
    return {"paths": paths, "models": models, "test": data.loader("test", batch_size=2000)}
