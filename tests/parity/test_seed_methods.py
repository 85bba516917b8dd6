"""The seed's weight matching and REPAIR (XingyuQu/VF source/utils/weight_matching.py
``get_wm_perm`` and source/utils/connect.py ``repair``), re-stated from its code for the test,
against weightlab's on the same tensors: seed VGGs saved as the seed saves them, imported."""

from __future__ import annotations

import copy

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from weightlab import checkpoint as ckpt_io
from weightlab import plugins
from weightlab.graph import trace
from weightlab.importer import import_state_dict

from .seed_models import seed_model


def _imported(net: nn.Module, name: str, tmp_path, tag: str) -> nn.Module:
    src = tmp_path / f"{tag}.pt"
    torch.save(net.state_dict(), src)
    import_state_dict(src, name, "cifar10", tmp_path / f"{tag}.safetensors")
    return ckpt_io.load_model(tmp_path / f"{tag}.safetensors")[0].eval()


def _random_bn(net: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net


# ---- the seed's weight matching, re-stated ------------------------------------------------
def seed_vgg_spec(net: nn.Module) -> dict[str, tuple]:
    """axes_to_perm as cifar_vgg_permutation_spec builds it: conv i's output permutation on
    its weight rows, bias and the following BatchNorm's weight, bias and running statistics;
    the next conv's (and the classifier's) input axis."""
    axes, prev = {}, None
    feats = list(net.features)
    for i, m in enumerate(feats):
        if isinstance(m, nn.Conv2d):
            p = f"P_Conv_{i}"
            axes[f"features.{i}.weight"] = (p, prev, None, None)
            axes[f"features.{i}.bias"] = (p,)
            if i + 1 < len(feats) and isinstance(feats[i + 1], nn.BatchNorm2d):
                for k in ("weight", "bias", "running_mean", "running_var"):
                    axes[f"features.{i + 1}.{k}"] = (p,)
            prev = p
    axes["classifier.0.weight"] = (None, prev)
    axes["classifier.0.bias"] = (None,)
    return axes


def _permuted(axes, perm, k, params, except_axis=None):
    w = params[k]
    for axis, p in enumerate(axes.get(k, ())):
        if axis != except_axis and p is not None:
            w = torch.index_select(w, axis, perm[p].long())
    return w


def seed_weight_matching(axes, params_a, params_b, max_iter=100, tol=1e-12):
    """get_wm_perm: visit the permutations in a torch.randperm order each iteration, build
    A = Σ w_a w_bᵀ over the axes of p (other axes permuted), solve the assignment."""
    perm_to_axes: dict[str, list] = {}
    for k, ps in axes.items():
        for axis, p in enumerate(ps):
            if p is not None:
                perm_to_axes.setdefault(p, []).append((k, axis))
    sizes = {p: params_a[ax[0][0]].shape[ax[0][1]] for p, ax in perm_to_axes.items()}
    perm = {p: torch.arange(n) for p, n in sizes.items()}
    names = list(perm)
    for _ in range(max_iter):
        progress = False
        for ix in torch.randperm(len(names)):
            p = names[ix]
            n = sizes[p]
            a = torch.zeros((n, n), dtype=torch.float64)
            for k, axis in perm_to_axes[p]:
                w_a = torch.moveaxis(params_a[k].double(), axis, 0).reshape((n, -1))
                w_b = torch.moveaxis(_permuted(axes, perm, k, params_b, axis).double(),
                                     axis, 0).reshape((n, -1))
                a += w_a @ w_b.T
            _, ci = linear_sum_assignment(a.numpy(), maximize=True)
            old = a[torch.arange(n), perm[p]].sum()
            new = a[torch.arange(n), torch.from_numpy(ci)].sum()
            progress = progress or bool(new > old + tol)
            perm[p] = torch.from_numpy(ci)
        if not progress:
            break
    return {k: _permuted(axes, perm, k, params_b) for k in params_b}


def test_weight_matching_equals_the_seeds_on_a_planted_permutation(tmp_path):
    """VGG11-BN (random init and BN statistics): B is A with every conv's channels permuted
    (the seed's own spec applied) plus N(0, 0.01²) noise. The seed's loop and weightlab's (with
    include_bn_stats=true: the seed's spec counts running statistics) return the same aligned
    B, tensor for tensor (measured: identical), and it is A's channel order."""
    torch.manual_seed(0)
    a = _random_bn(seed_model("cifar_vgg11_bn"), 1).eval()
    axes = seed_vgg_spec(a)
    gen = torch.Generator().manual_seed(2)
    planted = {p: torch.randperm(a.features[int(p.split("_")[-1])].out_channels,
                                 generator=gen) for ps in axes.values() for p in ps if p}
    b = copy.deepcopy(a)
    with torch.no_grad():
        sb = {k: _permuted(axes, planted, k, a.state_dict()) for k in a.state_dict()}
        sb = {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
              for k, v in sb.items()}
        b.load_state_dict(sb)
    torch.manual_seed(3)
    seed_b = seed_weight_matching(axes, a.state_dict(), b.state_dict())
    wa, wb = (_imported(m, "cifar_vgg11_bn", tmp_path, t) for m, t in ((a, "a"), (b, "b")))
    graph = trace(wa, torch.zeros(1, 3, 32, 32))
    al = plugins.registry().create("matchers", "weight", {"include_bn_stats": True}).match(
        graph, wa, wb)
    ours = al.apply(graph, wb.state_dict())
    for k, v in seed_b.items():
        if v.is_floating_point():
            assert torch.equal(ours[k], v), k
    assert (ours["features.0.weight"] - a.state_dict()["features.0.weight"]).abs().max() < 0.05


# ---- the seed's REPAIR, re-stated ---------------------------------------------------------
class _Track(nn.Module):
    """TrackLayer: the conv, then a BatchNorm that only accumulates statistics."""

    def __init__(self, layer):
        super().__init__()
        self.layer, self.bn = layer, nn.BatchNorm2d(layer.out_channels)

    def forward(self, x):
        y = self.layer(x)
        self.bn(y)
        return y


class _Reset(nn.Module):
    """ResetLayer: the conv, then a BatchNorm whose affine weight/bias are the goal std/mean."""

    def __init__(self, layer):
        super().__init__()
        self.layer, self.bn = layer, nn.BatchNorm2d(layer.out_channels)

    def forward(self, x):
        return self.bn(self.layer(x))


@torch.no_grad()
def _vgg_init(net: nn.Module) -> nn.Module:
    """The seed's --special-init vgg_init (Kaiming normal fan-out convs, N(0, 0.01²) head),
    with small random biases so that the bias-induced part is not zero."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            m.bias.normal_(0, 0.05)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            m.bias.normal_(0, 0.01)
    return net


def _wrap(net, cls):
    net = copy.deepcopy(net)
    for i, m in enumerate(net.features):
        if isinstance(m, nn.Conv2d):
            net.features[i] = cls(m)
    return net.eval()


@torch.no_grad()
def _reset_bn_stats(net, loader):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # bn_calibration_init
            m.reset_running_stats()
            m.training, m.momentum = True, None
    net.train()
    for x, _ in loader:
        net(x)
    net.eval()


def seed_repair(refs, merged, loader, alphas):
    tracked = [_wrap(m, _Track) for m in refs]
    for t in tracked:
        _reset_bn_stats(t, loader)
    repaired = _wrap(merged, _Reset)
    for layers in zip(*[t.modules() for t in tracked], repaired.modules()):
        if not isinstance(layers[0], _Track):
            continue
        mus = [lay.bn.running_mean for lay in layers[:-1]]
        stds = [lay.bn.running_var.sqrt() for lay in layers[:-1]]
        layers[-1].bn.bias.data = sum(a * mu for a, mu in zip(alphas, mus))
        layers[-1].bn.weight.data = sum(a * sd for a, sd in zip(alphas, stds))
    _reset_bn_stats(repaired, loader)
    return repaired


def test_repair_at_the_seeds_places_equals_the_seeds_repair(tmp_path):
    """Naive midpoint of two plain VGG11s (the seed's vgg_init, small random biases),
    repaired towards both with α = ½ on one calibration batch of 256 random 32×32 images: the
    seed's repair (TrackLayers and ResetLayers around every conv, statistics in BatchNorm
    buffers) against weightlab's ``repair`` with placement=seed (folded into the convs). They
    differ only in the variance estimator (the seed's running_var is unbiased, n/(n−1) with
    n = 256·H·W per channel — 1,024 at the last convs — and ε enters differently). Measured
    on 64 other images: max relative |Δ logits| 1.0e-3 between the two, while repair itself
    changes the logits by 0.77; tolerance 5e-3."""
    torch.manual_seed(0)
    a, b = (_vgg_init(seed_model("cifar_vgg11")).eval() for _ in range(2))
    gen = torch.Generator().manual_seed(1)
    x_cal = torch.randn(256, 3, 32, 32, generator=gen)
    x_test = torch.randn(64, 3, 32, 32, generator=gen)
    loader = [(x_cal, torch.zeros(256, dtype=torch.long))]
    merged = copy.deepcopy(a)
    merged.load_state_dict({k: 0.5 * (a.state_dict()[k] + b.state_dict()[k])
                            for k in a.state_dict()})
    want = seed_repair([a, b], merged, loader, [0.5, 0.5])
    wa, wb, wm = (_imported(m, "cifar_vgg11", tmp_path, t)
                  for m, t in ((a, "a"), (b, "b"), (merged, "m")))
    got = plugins.registry().create("normalizers", "repair", {"placement": "seed"}).apply(
        wm, [wa, wb], [0.5, 0.5], loader)
    with torch.no_grad():
        y_seed, y_ours, y_before = want(x_test), got(x_test), wm(x_test)
    rel = ((y_ours - y_seed).abs().max() / y_seed.abs().max()).item()
    print(f"max relative |Δ logits| {rel:.1e}")
    assert rel < 5e-3
    assert ((y_before - y_seed).abs().max() / y_seed.abs().max()).item() > 0.3
