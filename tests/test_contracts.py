"""Every registered component of every kind, run through the interface its base class declares
(:mod:`weightlab.components`), and a third-party ensemble written only from that base class
working in ``weightlab soup``. What the platform calls is what the base classes declare."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from weightlab import checkpoint, hookimpl, plugins, testing
from weightlab.components import BASES, Ensemble

REG_KINDS = sorted(BASES)


def _entries(kind):
    return plugins.registry().all(kind)


def _ids(kind):
    return [e.qualified for e in _entries(kind)]


@pytest.fixture(scope="module")
def pair():
    """Two 8×8-digits MLPs (seeds 0 and 1, untrained) and a calibration loader."""
    torch.manual_seed(0)
    a = testing.tiny_model("mlp", width=32, depth=2, seed=0).eval()
    b = testing.tiny_model("mlp", width=32, depth=2, seed=1).eval()
    return a, b, testing.calibration("digits", num_samples=256)


@pytest.mark.parametrize("kind", REG_KINDS)
def test_every_component_is_complete(kind):
    for e in _entries(kind):
        assert issubclass(e.cls, BASES[kind]), e.qualified
        testing.assert_valid_component(e.cls)


@pytest.mark.parametrize("entry", _ids("models"))
def test_models_build_and_classify(entry):
    cls = plugins.registry().get("models", entry)
    name = (cls.examples or (cls.name,))[0]
    comp = plugins.registry().create("models", name)
    shape = tuple(comp.default_input_shape)
    if shape[-1] > 64:  # ImageNet-sized families: a smaller input keeps the test cheap
        shape = (shape[0], 64, 64)
    net = comp.build(shape, 10).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, *shape))
    assert out.shape == (2, 10), (name, out.shape)


@pytest.mark.parametrize("entry", _ids("datasets"))
def test_datasets_describe_what_they_load(entry):
    cls = plugins.registry().get("datasets", entry)
    ds = cls.create({})
    assert len(cls.input_shape) == 3 and len(cls.mean) == len(cls.std)
    assert len(cls.mean) in (1, cls.input_shape[0])  # per channel, or one for all
    if cls.needs_data_dir:
        pytest.skip(f"{entry} reads files (tests/test_datasets.py covers it)")
    x, y = ds.load(None, "test")
    assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == tuple(cls.input_shape)
    assert 0 <= int(y.min()) and int(y.max()) < cls.num_classes


@pytest.mark.parametrize("entry", _ids("matchers"))
def test_matchers_align_without_changing_the_function(entry, pair):
    from weightlab.merging import merge

    a, b, calib = pair
    m = plugins.registry().create("matchers", entry)
    if not m.needs_graph:  # identity: the platform calls no match and averages naively
        res = merge([a, b], [0.5, 0.5], matcher=m, graph=None)
        assert res.alignments == [None, None]
        return
    graph = testing.trace(a)
    al = m.match(graph, a, b, calib if m.needs_data else None)
    assert al.joint == m.joint, "a joint matcher returns a joint alignment (and only it)"
    if al.joint:
        expressed = al.express(graph, [a, b])
        assert len(expressed) == 2 and set(expressed[0]) == set(a.state_dict())
    else:
        testing.assert_same_function(b, _with(b, al.apply(graph, b.state_dict())))
    merged = merge([a, b], [0.5, 0.5], matcher=m, graph=graph, match_data=calib).model
    assert torch.isfinite(merged(torch.randn(4, 1, 8, 8))).all()


def _with(model, state):
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    return net


@pytest.mark.parametrize("entry", _ids("normalizers"))
def test_normalizers_return_a_new_model_and_leave_the_input(entry):
    """BatchNorm ResNet-8 on digits, so that reset_bn applies too."""
    from weightlab.merging import merge

    a = testing.tiny_model("cifar_resnet8", seed=0).eval()
    b = testing.tiny_model("cifar_resnet8", seed=1).eval()
    calib = testing.calibration("digits", num_samples=256)
    mid = merge([a, b], [0.5, 0.5], matcher=None, graph=None).model
    before = {k: v.clone() for k, v in mid.state_dict().items()}
    n = plugins.registry().create("normalizers", entry)
    out = n.apply(mid, [a, b], [0.5, 0.5], calib if n.needs_data else None,
                  testing.trace(a))
    assert out is not mid and type(out) is type(mid)
    assert {k: v.shape for k, v in out.state_dict().items()} == \
        {k: v.shape for k, v in before.items()}
    assert all(torch.equal(v, mid.state_dict()[k]) for k, v in before.items()), \
        f"{entry} changed its input model"
    assert any(not torch.equal(v, before[k]) for k, v in out.state_dict().items()), \
        f"{entry} changed nothing"


@pytest.mark.parametrize("entry", _ids("pruners"))
def test_pruners_return_masks_at_the_sparsity(entry, pair):
    a, _, calib = pair
    p = plugins.registry().create("pruners", entry)
    net = copy.deepcopy(a)
    masks = p.prune(net, 0.5, {}, calib if p.needs_data else None)
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    assert testing.sparsity(masks) == pytest.approx(0.5, abs=0.02)
    params = dict(net.named_parameters())
    assert all(float(params[k].detach()[~m].abs().sum()) == 0.0 for k, m in masks.items()), \
        "prune() zeroes what it masks"
    assert p.last_report is None or isinstance(p.last_report, dict)


@pytest.mark.parametrize("entry", _ids("ensembles"))
def test_ensembles_combine_through_the_declared_call(entry, pair):
    a, b, calib = pair
    e = plugins.registry().create("ensembles", entry)
    held = testing.tiny_data("digits", heldout=200).loader("heldout", batch_size=100) \
        if e.needs_data else None
    out = e.combine([a, b], held, masks=[{}, {}], calibration=calib, names=["a", "b"])
    y = out(torch.randn(4, 1, 8, 8))
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    if e.saveable:
        assert set(out.state_dict()) == set(a.state_dict())
    assert e.shared_mask is None or isinstance(e.shared_mask, dict)
    assert e.info is None or isinstance(e.info, dict)


class Median(Ensemble):
    """Element-wise median of the ingredients' weights: written from the base class's
    documentation only (its example), as a third party would."""

    name = "median"
    summary = "element-wise median of the ingredients"

    @dataclass
    class Params:
        pass

    def combine(self, models, heldout=None, *, masks=None, calibration=None, names=None):
        from weightlab.interpolation import with_state

        states = [m.state_dict() for m in models]
        return with_state(models[0], {k: torch.stack([s[k] for s in states]).median(0).values
                                      for k in states[0]})


class MedianPlugin:
    @hookimpl
    def weightlab_register_ensembles(self):
        return [Median]


def test_a_third_party_ensemble_works_in_soup(cli, tmp_path):
    """Three random digits MLPs; the median soup equals the element-wise median, and the
    command reports it (three ingredients, all chosen)."""
    paths, states = [], []
    for seed in range(3):
        net = testing.tiny_model("mlp", width=32, seed=seed)
        info = checkpoint.model_info("mlp", {"width": 32}, (1, 8, 8), 10)
        paths.append(checkpoint.save(checkpoint.from_model(net, info, data={"name": "digits"}),
                                     tmp_path / f"m{seed}.safetensors"))
        states.append(net.state_dict())
    with testing.registered(("median-plugin", MedianPlugin())):
        res = cli.json("soup", *paths, "--method", "median", "-o", tmp_path / "soup.safetensors")
    assert res["method"] == "median" and res["chosen"] == [1, 2, 3]
    soup = checkpoint.load(tmp_path / "soup.safetensors")
    for k, v in soup.state.items():
        assert torch.equal(v, torch.stack([s[k] for s in states]).median(0).values), k
