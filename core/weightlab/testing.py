"""Test helpers for weightlab and its plugins.

- :func:`plugin_state` / :func:`registered`: register a plugin object in-process.
- :func:`shared_data_dir`: the real datasets beside the checkout (``../shared/data``), or a
  pytest skip with the reason.
- :func:`trained`: train (once, cached on disk) a model or a group of models on real data and
  return their checkpoints — the fixture every numerical test starts from.
- :func:`tiny_model` / :func:`tiny_data`: small things for fast unit tests.

For plugin authors (the ``weightlab plugins new`` template's tests use these):

- :func:`component_problems` / :func:`assert_valid_component`: what ``weightlab plugins
  validate`` checks, for one class (name, summary, docstring, default parameters).
- :func:`calibration`: a small loader of real (digits) images.
- :func:`trace`: the feature-space graph of a model.
- :func:`assert_same_function`: two models compute the same outputs.
- :func:`sparsity`: the fraction of weights masks remove.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
REPO = Path(__file__).resolve().parents[2]
# the code whose change can change a trained model: the cache key holds its contents
TRAINING_CODE = ("training", "models", "data", "params.py", "checkpoint.py", "device.py")


def training_code_digest() -> str:
    """SHA-256 (16 hex digits) over the sources of :data:`TRAINING_CODE` (names and bytes)."""
    import hashlib

    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in TRAINING_CODE:
        target = root / name
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def plugin_state(*plugins: tuple[str, Any], entry_points: bool = True):
    """A fresh :class:`weightlab.plugins.PluginState` with extra in-process plugins."""
    from weightlab import plugins as pl

    return pl.load(list(plugins), entry_points=entry_points)


@contextlib.contextmanager
def registered(*plugins: tuple[str, Any], entry_points: bool = True) -> Iterator[Any]:
    """Make ``plugins`` part of the process-wide state (what the CLI sees) for a block."""
    from weightlab import plugins as pl

    old = pl._STATE
    state = plugin_state(*plugins, entry_points=entry_points)
    pl.set_state(state)
    try:
        yield state
    finally:
        pl.set_state(old)


def shared_data_dir(*need: str) -> Path:
    """``../shared/data`` (or $WEIGHTLAB_TEST_DATA); skips the test when ``need`` is absent."""
    import pytest

    root = Path(os.environ.get("WEIGHTLAB_TEST_DATA", REPO.parent / "shared" / "data"))
    for rel in need:
        if not (root / rel).exists():
            pytest.skip(f"real data {root / rel} is absent (see ../shared/data/README.md)")
    return root


def cifar10_dir() -> Path:
    """A CIFAR-10 directory in the standard layout, written once from the shared JPEG copy."""
    import subprocess
    import sys

    root = shared_data_dir("cifar10/cifar10_jpeg_bytes.npz")
    dest = cache_dir() / "cifar10"
    if not (dest / "cifar-10-batches-py" / "test_batch").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(root / "cifar10" / "materialize.py"), str(dest)],
                       check=True, capture_output=True)
    return dest


def cache_dir() -> Path:
    d = Path(os.environ.get("WEIGHTLAB_TEST_CACHE", REPO / ".pytest_cache" / "weightlab"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def trained(model: str, data: str, *, models: int = 2, epochs: int = 3, seed: int = 0,
            data_dir: Path | None = None, model_params: dict | None = None,
            train: dict | None = None, same_init: bool = False, heldout: int = 0,
            device: str = "cpu") -> list[Path]:
    """Checkpoints of ``models`` models trained with seeds seed, seed+1, …; cached by their
    arguments and the training code's contents (:func:`training_code_digest`), so a test
    session trains each group once and a change to training, models or data retrains."""
    from weightlab.data.bundle import load_data
    from weightlab.params import build_params
    from weightlab.training.config import TrainConfig
    from weightlab.training.loop import TrainJob
    from weightlab.training.loop import train as run_train

    spec = {"v": CACHE_VERSION, "code": training_code_digest(), "model": model, "data": data,
            "models": models,
            "epochs": epochs, "seed": seed, "params": model_params or {}, "train": train or {},
            "same_init": same_init, "heldout": heldout}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = cache_dir() / f"{model}-{data}-{key}"
    paths = [run_dir / f"model_{k + 1}.safetensors" for k in range(models)]
    if all(p.is_file() for p in paths):
        return paths
    bundle = load_data(data, data_dir=data_dir, device=device, heldout=heldout)
    cfg = build_params(TrainConfig, {"epochs": epochs, "seed": seed, **(train or {})})
    job = TrainJob(model, model_params or {}, bundle, cfg, run_dir, num_models=models,
                   same_init=same_init, device=device)
    run_train(job, resume=True, progress=False, force=True)
    return paths


def tiny_model(name: str = "mlp", input_shape=(1, 8, 8), num_classes: int = 10, seed: int = 0,
               **params: Any):
    import torch

    from weightlab import plugins

    torch.manual_seed(seed)
    comp = plugins.registry().create("models", name, params)
    return comp.build(input_shape, num_classes)


def tiny_data(name: str = "digits", device: str = "cpu", **kw: Any):
    from weightlab.data.bundle import load_data

    return load_data(name, device=device, **kw)


# ---- plugin-authoring helpers ---------------------------------------------------------------

def component_problems(cls: Any) -> list[str]:
    """Problems ``weightlab plugins validate`` would report for one component class."""
    from weightlab.components import BASES

    out = []
    kind = getattr(cls, "kind", "")
    if kind not in BASES or not (isinstance(cls, type) and issubclass(cls, BASES[kind])):
        return [f"{cls!r} is not a subclass of a weightlab.components base class"]
    if not getattr(cls, "name", "") or not isinstance(cls.name, str):
        out.append("no name")
    if not getattr(cls, "summary", ""):
        out.append("no summary (one line)")
    if not (cls.__doc__ or "").strip():
        out.append("no docstring")
    try:
        cls.create({})
    except Exception as e:  # noqa: BLE001
        out.append(f"default parameters invalid: {e}")
    for p in cls.parameters():
        if not p["help"]:
            out.append(f"parameter {p['name']}: no help text")
    return out


def assert_valid_component(cls: Any) -> None:
    problems = component_problems(cls)
    assert not problems, f"{getattr(cls, 'name', cls)}: " + "; ".join(problems)


def calibration(name: str = "digits", num_samples: int = 256, batch_size: int = 128,
                device: str = "cpu", **kw: Any):
    """A loader of ``num_samples`` training images without augmentation (seeded order)."""
    return tiny_data(name, device=device, **kw).loader("calibration", batch_size=batch_size,
                                                       num_samples=num_samples)


def trace(model: Any, input_shape: tuple[int, ...] = (1, 8, 8)):
    """The feature-space graph of ``model`` (see :mod:`weightlab.graph`)."""
    import torch

    from weightlab.graph import trace as run_trace

    dev = next(iter(model.parameters())).device
    return run_trace(model, torch.zeros(2, *input_shape, device=dev))


def assert_same_function(a: Any, b: Any, data: Any = None, *, input_shape=(1, 8, 8),
                         atol: float = 1e-4) -> None:
    """``a`` and ``b`` give the same logits on a batch of ``data`` (or of random inputs)."""
    import torch

    dev = next(iter(a.parameters())).device
    if data is not None:
        x = next(iter(data))[0].to(dev)
    else:
        x = torch.randn(16, *input_shape, generator=torch.Generator().manual_seed(0)).to(dev)
    a.eval()
    b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    err = float((ya - yb).abs().max())
    assert err <= atol * max(1.0, float(ya.abs().max())), f"outputs differ by {err:.3g}"


def sparsity(masks: dict[str, Any]) -> float:
    """Fraction of the masked weights that are removed (False)."""
    from weightlab.checkpoint import sparsity_report

    return float(sparsity_report(masks)["overall"]) if masks else 0.0


def randomize_norms(net: Any, seed: int) -> Any:
    """Non-trivial norm statistics and affine parameters (BatchNorm running statistics,
    BatchNorm/channel-LayerNorm γ and β), so that a wrong fold of a correction shows."""
    import torch
    from torch import nn

    from weightlab.models.layers import ChannelLayerNorm

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if isinstance(m, (nn.BatchNorm2d, ChannelLayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
    return net


def mnist_mlp_pair(calibration_samples: int = 5000) -> dict:
    """The MNIST MLP pair the matcher tests share (3×512, 2 epochs, lr 0.05, seeds 0 and 1;
    cached by :func:`trained`): paths, models in eval mode, the data root, the test loader and
    ``calibration_samples`` calibration images."""
    from weightlab import checkpoint as ckpt_io
    from weightlab.data.bundle import load_data

    root = shared_data_dir("MNIST")
    paths = trained("mlp", "mnist", data_dir=root, epochs=2, train={"lr": 0.05})
    data = load_data("mnist", data_dir=root)
    return {"paths": paths, "models": [ckpt_io.load_model(p)[0].eval() for p in paths],
            "root": root, "test": data.loader("test", batch_size=2000),
            "calibration": data.loader("calibration", batch_size=1000,
                                       num_samples=calibration_samples)}


def torchvision_vit(seed: int = 0) -> Any:
    """A small torchvision ViT for attention tests (28×28 RGB, 7×7 patches, 2 blocks, 4 heads of
    8, width 32, MLP 64): a residual stream, per block a query·key and a value·output space of
    4 heads and an MLP space. torchvision zero-initializes the head; here it is N(0, 0.1²) so
    that the logits depend on the rest. Eval mode."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.VisionTransformer(image_size=28, patch_size=7, num_layers=2,
                                               num_heads=4, hidden_dim=32, mlp_dim=64,
                                               num_classes=10).eval()
    torch.nn.init.normal_(net.heads.head.weight, std=0.1)
    return net
