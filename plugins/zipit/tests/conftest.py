"""Fixtures of the zipit plugin's tests: small models on the digits data that ship with
weightlab, and the cached pair of MNIST MLPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from weightlab.pytest_fixtures import pytest_configure  # noqa: F401


class ConvFlat(nn.Module):
    """conv → BN → ReLU → flatten (8 channels × 64 pixels) → linear: a channel space whose
    consumer is a flatten-expanded linear input (repeat 64)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class SplitCat(nn.Module):
    """CSPNet / DPN-style channels made of parts: a stem's 8 channels split 4 + 4 (two spaces),
    each half through its own conv, the results concatenated (4 + 6) with a BatchNorm over the
    10 and mixed; a ghost-style slice ``cat(p, cheap(p))[:, :6]`` after it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 1)
        self.b1, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.mix = nn.Conv2d(10, 4, 1)
        self.cheap = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        a, b = torch.relu(self.stem(x)).split((4, 4), dim=1)
        y = torch.relu(self.bn(torch.cat([self.b1(a), self.b2(b)], dim=1)))
        p = self.mix(y)
        z = torch.relu(torch.cat([p, self.cheap(p)], dim=1)[:, :6])
        return self.head(z.mean((2, 3)))


def randomize_norms(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that they matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    return net.eval()


@pytest.fixture(scope="session")
def digits():
    from weightlab import testing

    return testing.tiny_data("digits")


@pytest.fixture(scope="session")
def small_models():
    """name → (model, input shape): a residual net (tied spaces), ConvFlat (flatten) and
    SplitCat (channels made of parts)."""
    from weightlab import testing

    torch.manual_seed(0)
    return {"cifar_resnet8": (randomize_norms(testing.tiny_model("cifar_resnet8", (1, 8, 8))),
                              (1, 8, 8)),
            "convflat": (randomize_norms(ConvFlat()), (1, 8, 8)),
            "splitcat": (randomize_norms(SplitCat()), (1, 8, 8))}


@pytest.fixture(scope="session")
def mnist_pair():
    """Two MNIST MLPs (3×512, 2 epochs, lr 0.05, seeds 0 and 1; cached by weightlab.testing)."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import testing

    root = testing.shared_data_dir("MNIST")
    paths = testing.trained("mlp", "mnist", data_dir=root, epochs=2, train={"lr": 0.05})
    models = [ckpt_io.load_model(p)[0].eval() for p in paths]
    return root, paths, models
