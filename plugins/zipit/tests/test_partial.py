"""Partially merged models: the two ends of the sweep, the merge points of every k (residual
streams, a flatten), normalizers on the partial model, and checkpoints that rebuild."""

from __future__ import annotations

import copy

import pytest
import torch
from weightlab import checkpoint as ckpt_io
from weightlab import plugins, testing
from weightlab.alignment import random_permutation
from weightlab.errors import CheckpointError
from weightlab.graph import trace
from weightlab_zipit.joint import joint_form, merged_model, references
from weightlab_zipit.partial import build_partial, structure_header


@pytest.fixture(scope="module")
def mnist_zipped(mnist_pair):
    """The MNIST pair, its graph, a ZipIt! joint merge and 1000 test images."""
    root, _, models = mnist_pair
    data = testing.tiny_data("mnist", data_dir=root)
    graph = trace(models[0], torch.zeros(2, 1, 28, 28))
    calib = data.loader("calibration", batch_size=500, num_samples=1000)
    joint = plugins.registry().create("matchers", "zipit", {}).match(graph, *models, calib)
    x, _ = next(iter(data.loader("test", batch_size=1000)))
    return models, graph, joint, data, x


def test_ends_of_the_sweep(mnist_zipped):
    """k = 0 is the fully merged model; k = L is the logit average of the aligned copies (the
    two models expressed in the merged space, whose logits are the models' own: the logits
    space is fixed). Measured max |Δ| 0 and 0 on 1000 MNIST test images."""
    models, graph, joint, _, x = mnist_zipped
    n = len(graph.layers)
    with torch.no_grad():
        full = merged_model(models, graph, joint).eval()(x)
        assert torch.allclose(build_partial(models, graph, joint, 0, (1, 28, 28))(x), full,
                              atol=1e-5)
        ensemble = sum(m(x) for m in models) / 2
        assert torch.allclose(build_partial(models, graph, joint, n, (1, 28, 28))(x), ensemble,
                              atol=1e-5)


@pytest.mark.parametrize("name", ["cifar_resnet8", "convflat", "splitcat"])
def test_every_merge_point_uses_its_space(name, small_models):
    """With a permutation alignment, the reference built with weights (0, 1) must compute
    model B exactly at every k: each merge point maps B's prefix features with the
    permutation of the space they live in (residual streams, pre-activation values, the
    flatten; for channels made of parts — the second half of a split, a concatenation, a
    slice — each part with its own, block-diagonally), and the remainder is B aligned.
    Weights (1, 0) compute model A."""
    net_a, shape = small_models[name]
    net_b = copy.deepcopy(net_a)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in net_b.parameters():
            p.add_(0.1 * torch.randn_like(p))
    graph = trace(net_a, torch.zeros(2, *shape))
    al = random_permutation(graph, torch.Generator().manual_seed(5))
    x = torch.randn(16, *shape)
    with torch.no_grad():
        ya, yb = net_a(x), net_b(x)
        for k in range(len(graph.layers) + 1):
            ref_a = build_partial([net_a, net_b], graph, al, k, shape, (1.0, 0.0)).eval()
            ref_b = build_partial([net_a, net_b], graph, al, k, shape, (0.0, 1.0)).eval()
            assert torch.allclose(ref_a(x), ya, rtol=1e-4, atol=1e-5), k
            assert torch.allclose(ref_b(x), yb, rtol=1e-4, atol=1e-5), k


def test_preserved_layers_count_twice(mnist_zipped):
    models, graph, joint, _, _ = mnist_zipped
    base = sum(p.numel() for p in models[0].parameters())
    for k, extra in ((0, 0), (1, 784 * 512 + 512), (4, base)):
        net = build_partial(models, graph, joint, k, (1, 28, 28))
        assert sum(p.numel() for p in net.parameters()) == base + extra
        assert net.partial["preserved"] == [layer.name for layer in graph.layers[:k]]


def test_repair_leaves_preserved_copies_and_fixes_the_remainder(mnist_zipped):
    """REPAIR on a partial model (ZipIt!, k = 1): the preserved copies' weights are kept (they
    already have their references' statistics), the merged layers change. Measured test
    accuracy on 1000 MNIST images: 97.0% before, 97.2% after."""
    models, graph, joint, data, x = mnist_zipped
    from weightlab_zipit.pfm import partial_with_normalizer

    calib = data.loader("calibration", batch_size=500, num_samples=1000)
    repair = plugins.registry().create("normalizers", "repair", {"samples": 1000})
    plain = build_partial(models, graph, joint, 1, (1, 28, 28))
    fixed = partial_with_normalizer(models, graph, joint, 1, (1, 28, 28), repair, calib)
    sd_plain, sd_fixed = plain.state_dict(), fixed.state_dict()
    for key in sd_plain:
        if key.startswith(("net.a.", "net.b.")):
            assert torch.allclose(sd_plain[key], sd_fixed[key], rtol=1e-4, atol=1e-6), key
    assert not torch.allclose(sd_plain["net.m.layers.3.weight"],
                              sd_fixed["net.m.layers.3.weight"])
    y = next(iter(data.loader("test", batch_size=1000)))[1]
    with torch.no_grad():
        acc = [float((m(x).argmax(1) == y).float().mean()) for m in (plain, fixed)]
    assert acc[1] > 0.95 and acc[1] >= acc[0] - 0.005


def test_references_of_a_permutation_are_the_models(mnist_zipped):
    models, graph, _, _, x = mnist_zipped
    weight = plugins.registry().create("matchers", "weight", {}).match(graph, *models)
    refs = references(models, graph, joint_form(weight, graph))
    with torch.no_grad():
        for ref, m in zip(refs, models):
            assert torch.allclose(ref.eval()(x), m(x), atol=1e-4)


def test_checkpoint_round_trip(small_models, tmp_path):
    """A partial model saved with its structure header loads back as the same function
    through weightlab.checkpoint.load_model (the header's builder rebuilds it)."""
    net_a, shape = small_models["cifar_resnet8"]
    net_b = testing.tiny_model("cifar_resnet8", shape, seed=3).eval()
    graph = trace(net_a, torch.zeros(2, *shape))
    al = random_permutation(graph, torch.Generator().manual_seed(2))
    net = build_partial([net_a, net_b], graph, al, 4, shape).eval()
    model_info = ckpt_io.model_info("cifar_resnet8", {}, shape, 10)
    matcher = {"name": "weight", "params": {}}
    ck = ckpt_io.from_model(net, model_info, extra={"structure": structure_header(net,
                                                                                  matcher)})
    path = ckpt_io.save(ck, tmp_path / "partial.safetensors")
    header = ckpt_io.read_header(path)["structure"]
    assert header["kind"] == "partial" and header["k"] == 4 and header["matcher"] == matcher
    loaded, _ = ckpt_io.load_model(path)
    x = torch.randn(8, *shape)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), net(x))
    ck.extra["structure"] = {**ck.extra["structure"], "builder": "os:system"}
    bad = ckpt_io.save(ck, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="not a function of plugin 'zipit'"):
        ckpt_io.load_model(bad)
