"""ZipIt! and CCA: the pure functions against a literal reference and closed forms, and the
matchers on real digits features through the feature graph (residual-tied spaces, a
flatten-expanded linear input, BatchNorm)."""

from __future__ import annotations

import pytest
import torch
from weightlab import plugins
from weightlab.alignment import permute_model, random_permutation
from weightlab.graph import trace
from weightlab.matching.features import collect_feature_stats
from weightlab_zipit.cca import cca_match
from weightlab_zipit.joint import merged_model
from weightlab_zipit.zipit import zip_match


def _load_upstream():
    """upstream_zipit.py beside this file (tests run with --import-mode=importlib)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("upstream_zipit",
                                                  Path(__file__).with_name("upstream_zipit.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.upstream_zip


upstream_zip = _load_upstream()


@pytest.mark.parametrize("c,a,b", [(8, 0.3, 0.25), (24, 0.3, 0.125), (40, 0.3, 0.5),
                                   (40, 0.5, 0.25), (16, 0.0, 0.125), (24, 0.0, 0.25),
                                   (40, 0.0, 0.5), (40, -0.1, 0.25)])
def test_zip_match_equals_the_upstream_loop(c, a, b):
    """Against the port of upstream's match_tensors_zipit (upstream_zipit.py), a ≤ 0 included
    (before, the reference lived in the plugin and had no a ≤ 0 branch). Budgets are ≥ 1 here:
    at a budget of 0 the plugin blocks within-model pairs from the start (its documented
    deviation), upstream after one such merge."""
    g = torch.Generator().manual_seed(c)
    x = torch.randn(300, 2 * c, generator=g)
    x = x + 0.8 * x @ torch.randn(2 * c, 2 * c, generator=g) / (2 * c) ** 0.5
    corr = torch.corrcoef(x.T)
    merge, unmerge = zip_match(corr, a, b)
    assert torch.equal(unmerge, upstream_zip(corr, a, b))
    assert merge.shape == (c, 2 * c) and unmerge.shape == (2 * c, c)
    assert torch.allclose(merge.sum(1), torch.ones(c))  # a merged feature is a mean
    assert torch.allclose(merge, (unmerge / unmerge.sum(0)).T)


def test_at_a_zero_a_zipped_feature_never_meets_its_members_models_again():
    """a = 0 (upstream's rule, which the plugin follows — checked above against the port): a
    zipped feature is never zipped again with a feature of its members' models. So a
    within-model pair never grows inside its model (at most 2 members per model) and a
    feature holding both models is final: members per model ≤ 2, i.e. 1+1, 2+1, 1+2 or 2+2
    (two within-model pairs may still meet once). Before, the docstring said "never zipped
    again". 20 random probes, C = 24, b = 0.25: measured 1+1, 2+1 and 2+2 all occur."""
    kinds = set()
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        corr = torch.corrcoef(torch.randn(200, 48, generator=g).T)
        _, u = zip_match(corr, a=0.0, b=0.25)
        for col in u.T:
            members = col.nonzero().squeeze(1)
            counts = (int((members < 24).sum()), int((members >= 24).sum()))
            assert max(counts) <= 2, (seed, counts)
            kinds.add(tuple(sorted(counts)))
    assert {(1, 1), (1, 2), (2, 2)} <= kinds


def test_zip_match_budget_and_alpha():
    """b = 0 → only cross-model merges; with a = 0 as well, a permutation."""
    corr = torch.corrcoef(torch.randn(200, 64, generator=torch.Generator().manual_seed(1)).T)
    _, u = zip_match(corr, a=0.0, b=0.0)
    assert torch.equal(u[:32].sum(0), torch.ones(32)) and torch.equal(u[32:].sum(0),
                                                                      torch.ones(32))
    _, u = zip_match(corr, a=0.3, b=0.5)  # within-model merges happen when allowed
    assert int((u[32:].sum(0) == 0).sum()) > 0


def test_cca_match_inverts_a_permutation_and_mixes_otherwise():
    """B = permuted A: T = Pᵀ exactly (closed form in cca.py). B = A·R (a rotation): T maps
    B's features back onto A's, T·R ≈ I (measured error 0.02 with γ = 0.1, < 1e-3 with
    γ = 1e-4)."""
    g = torch.Generator().manual_seed(2)
    c = 12
    fa = torch.randn(2000, c, generator=g) @ torch.randn(c, c, generator=g)
    perm = torch.randperm(c, generator=g)
    cov = torch.cov(torch.cat([fa, fa[:, perm]], 1).T)
    merge, unmerge = cca_match(cov, 0.1)
    p = torch.eye(c)[perm]  # f_B = P f_A
    assert torch.allclose(2 * merge[:, c:], p.T, atol=1e-5)
    assert torch.allclose(unmerge[c:], p, atol=1e-5)
    assert torch.allclose(merge[:, :c], 0.5 * torch.eye(c)) and torch.equal(unmerge[:c],
                                                                            torch.eye(c))
    rot = torch.linalg.qr(torch.randn(c, c, generator=g))[0]
    cov = torch.cov(torch.cat([fa, fa @ rot.T], 1).T)  # f_B = R f_A
    t = 2 * cca_match(cov, 1e-4)[0][:, c:].double()
    assert (t @ rot.double() - torch.eye(c, dtype=torch.float64)).abs().max() < 1e-3


def _stats(models, graph, digits):
    calib = digits.loader("calibration", batch_size=256, num_samples=1000)
    return collect_feature_stats(models, graph, calib)


def _constant(stats, sid) -> bool:
    return bool((stats[sid].cov.diagonal() < 1e-12).any())


@pytest.mark.parametrize("name", ["cifar_resnet8", "convflat"])
def test_zipit_b0_recovers_identity_and_permutation(name, small_models, digits):
    """Real digits features. Identical models → unmerge [I; I] in every space. A randomly
    permuted copy → the permutation, in every space without a constant (dead) channel —
    among them the residual stream tied over 4 layers and the space read by a flatten-
    expanded linear layer — and the merged model computes model A's function on the test
    images: measured max |Δ| 2e-4 of outputs up to 0.27 for the ResNet (dead channels are
    interchangeable, so they may pair with another dead channel), 0 for ConvFlat."""
    net, shape = small_models[name]
    graph = trace(net, torch.zeros(2, *shape))
    zipit = plugins.registry().create("matchers", "zipit", {"b": 0})
    same = zipit.from_stats(graph, _stats([net, net], graph, digits))
    for s in graph.free_spaces():
        assert torch.equal(same.merges[s.id][1], torch.cat([torch.eye(s.size)] * 2)), s.id
    al = random_permutation(graph, torch.Generator().manual_seed(3))
    other = permute_model(net, graph, al).eval()
    stats = _stats([net, other], graph, digits)
    joint = zipit.from_stats(graph, stats)
    checked = [s for s in graph.free_spaces() if not _constant(stats, s.id)]
    for s in checked:
        assert torch.equal(joint.merges[s.id][1][s.size:].argmax(1), al.perms[s.id]), s.id
    kinds = {("tied" if len(s.producers) > 1 else "") +
             ("flat" if any(e.repeat > 1 for e in s.entries) else "") for s in checked}
    assert ("tied" in kinds) if name == "cifar_resnet8" else ("flat" in kinds)
    x, _ = next(iter(digits.loader("test", batch_size=400)))
    with torch.no_grad():
        ref, out = net(x), merged_model([net, other], graph, joint).eval()(x)
    assert (out - ref).abs().max() < 2e-3 * ref.abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("name", ["cifar_resnet8", "convflat"])
def test_cca_on_permuted_copy_merges_to_the_same_model(name, small_models, digits):
    """CCA of a model and its randomly permuted copy: T = Pᵀ on every space without a dead
    channel, and the merged model computes the same outputs on the digits test images
    (measured max |Δ| 1.7e-4 of outputs up to 0.27 for the ResNet — channels dead on the
    calibration images but not always on the test images — and 7e-8 for ConvFlat)."""
    net, shape = small_models[name]
    graph = trace(net, torch.zeros(2, *shape))
    al = random_permutation(graph, torch.Generator().manual_seed(4))
    other = permute_model(net, graph, al).eval()
    stats = _stats([net, other], graph, digits)
    joint = plugins.registry().create("matchers", "cca", {}).from_stats(graph, stats)
    for s in graph.free_spaces():
        if not _constant(stats, s.id):
            t = 2 * joint.merges[s.id][0][:, s.size:]
            assert torch.allclose(t, torch.eye(s.size)[al.perms[s.id]].T, atol=1e-4), s.id
    x, _ = next(iter(digits.loader("test", batch_size=400)))
    with torch.no_grad():
        ref, out = net(x), merged_model([net, other], graph, joint).eval()(x)
    assert (out - ref).abs().max() < 2e-3 * ref.abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_matchers_need_data_and_two_models(small_models, digits):
    from weightlab.errors import UsageError, WeightlabError
    from weightlab_zipit.matchers import ZipIt

    net, shape = small_models["convflat"]
    graph = trace(net, torch.zeros(2, *shape))
    with pytest.raises(UsageError, match="needs calibration data"):
        ZipIt().match(graph, net, net, None)
    stats = _stats([net, net, net], graph, digits)
    with pytest.raises(WeightlabError, match="exactly two models"):
        ZipIt().from_stats(graph, stats)


@pytest.mark.parametrize("name", ["zipit", "cca"])
def test_joint_matchers_refuse_three_models_before_any_calibration(name, monkeypatch):
    """A joint merge is of two models: three are refused up front, not after the (costly)
    statistics pass."""
    from weightlab.errors import UsageError
    from weightlab.merging import merge

    matcher = plugins.registry().create("matchers", name)
    calls = []
    monkeypatch.setattr(type(matcher), "match", lambda self, *a, **k: calls.append(a))
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 3)) for _ in range(3)]
    with pytest.raises(UsageError, match="exactly two models, got 3"):
        merge(nets, [1 / 3] * 3, matcher=matcher, graph=trace(nets[0], torch.zeros(2, 4)))
    assert calls == []


@pytest.mark.parametrize("b", [0.0, 0.5])
def test_joint_merge_endpoints_are_the_models(mnist_pair, b):
    """ZipIt! on the two MNIST MLPs, merged at w = (1, 0) and (0, 1). With b = 0 (cross-model
    zips only) the endpoints are the models exactly (float tolerance). With b = 0.5 some
    features of one model are zipped with each other; at its endpoint they are now averaged
    (the merged space has one channel for both) instead of doubled. Measured relative logit
    error (max |Δ| / max |logit|, 500 test images), endpoint A / B: b = 0: 0 / 1.5e-7;
    b = 0.5: 0.17 / 0.14 (the old fixed D = 2: 2.20 / 2.52). The midpoint's expression is
    unchanged (D(½, ½) = 2)."""
    from weightlab.data.bundle import load_data
    from weightlab_zipit.joint import model_parts

    root, _, models = mnist_pair
    data = load_data("mnist", data_dir=root)
    calib = data.loader("calibration", batch_size=500, num_samples=1000)
    x = next(iter(data.loader("test", batch_size=500)))[0]
    graph = trace(models[0], x[:2])
    matcher = plugins.registry().create("matchers", "zipit", {"b": b, "samples": 1000})
    joint = matcher.match(graph, models[0], models[1], calib)
    with torch.no_grad():
        for k, w in ((0, (1.0, 0.0)), (1, (0.0, 1.0))):
            want, got = models[k](x), merged_model(models, graph, joint, w)(x)
            rel = ((got - want).abs().max() / want.abs().max()).item()
            print(f"b={b} endpoint {k}: relative logit error {rel:.2e}")
            assert rel < (1e-5 if b == 0 else 0.3), rel
        halves = model_parts(joint, graph)
        for k, part in enumerate(joint.split(graph, 2)):
            for s, (m, _) in part.merges.items():
                assert torch.allclose(halves[k].merges[s][0], 2 * m)


class _Concat(torch.nn.Module):
    """Two conv branches concatenated along the channels, then one BatchNorm over all 8: its
    running mean and variance hold the two branches' spaces at offsets 0 and 4."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.c = torch.nn.Conv2d(8, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 10)

    def forward(self, x):
        y = torch.cat([self.a(x).relu(), self.b(x).relu()], dim=1)
        return self.head(self.c(self.bn(y)).relu().mean((2, 3)))


@pytest.mark.parametrize("name", ["zipit", "cca"])
def test_batchnorm_statistics_after_a_concatenation_merge_back(name):
    """A BatchNorm after a concatenation (DenseNet) holds two channel spaces at offsets 0 and
    4; ZipIt! and CCA merging the model with a planted permuted copy must map its running
    variance in both parts (each from the same tensor, at its own offset). The merged logits
    equal the model's (measured relative max |Δ| 0.0 zipit, 1.7e-7 cca; bound 1e-5); before,
    only the last part's variance survived, unmoved by its offset."""
    torch.manual_seed(0)
    net = _Concat().eval()
    with torch.no_grad():  # running statistics that differ per channel
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.2, 3)
    x = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    g = trace(net, x[:1])
    assert {e.offset for s in g.free_spaces() for e in s.entries
            if e.key == "bn.running_var"} == {0, 4}
    copy = permute_model(net, g, random_permutation(g, torch.Generator().manual_seed(3)))
    data = [(x[i:i + 64], torch.zeros(64, dtype=torch.long)) for i in range(0, 256, 64)]
    al = plugins.registry().create("matchers", name).match(g, net, copy, data)
    with torch.no_grad():
        ref, out = net(x[:64]), merged_model([net, copy], g, al)(x[:64])
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
