"""The traced feature-space graph and alignments: permuting every free space at random never
changes a model's outputs (float64, BN in eval mode with random statistics), for every
built-in family and torchvision ResNet-18 / VGG16-BN."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from weightlab import testing
from weightlab.alignment import Alignment, permute_model, random_permutation
from weightlab.errors import WeightlabError
from weightlab.graph import Entry, Space, feature_reader, trace

# model name, input shape, number of free spaces the trace must find
MODELS = [
    ("cifar_vgg11", (3, 32, 32), 8),
    ("cifar_vgg16_bn", (3, 32, 32), 13),
    ("cifar_vgg11_ln", (3, 32, 32), 8),
    ("cifar_vgg11_nobias", (3, 32, 32), 8),
    ("cifar_resnet20", (3, 32, 32), 12),  # 3 residual streams + 9 block-internal spaces
    ("cifar_resnet20_ln", (3, 32, 32), 12),
    ("plain_cifar_resnet20", (3, 32, 32), 12),
    ("fixup_cifar_resnet20", (3, 32, 32), 12),
    ("mlp", (1, 28, 28), 3),
    ("resnet18", (3, 64, 64), 12),  # 4 residual streams + 8 block-internal spaces
    ("vgg16_bn", (3, 32, 32), 15),  # 13 convs + 2 hidden linear layers
]


def randomized(model: nn.Module, seed: int = 0, reinit: bool = True) -> nn.Module:
    """Non-trivial norm affine parameters, running statistics, biases and Fixup scalars, and
    (``reinit``) Kaiming-normal weights so that the input's signal reaches the logits in every
    family: a wrong permutation of any of them shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, v in model.state_dict().items():
            if not v.is_floating_point():
                continue
            r = torch.randn(v.shape, generator=gen, dtype=v.dtype)
            if "running_var" in key:
                v.copy_(torch.rand(v.shape, generator=gen, dtype=v.dtype) + 0.5)
            elif v.dim() <= 1:
                one = key.endswith("weight") or key.endswith("scale")
                v.copy_(0.5 * r + (1.0 if one else 0.0))
            elif reinit:  # std = sqrt(2 / fan_in)
                v.copy_(r * (2.0 / v[0].numel()) ** 0.5)
    return model.eval()


def build(name: str, shape, seed: int = 0, dtype=torch.float64) -> nn.Module:
    # torchvision's own init already propagates the signal (Kaiming fan-out)
    reinit = not name.startswith(("resnet", "vgg"))
    net = testing.tiny_model(name, input_shape=shape, seed=seed)
    return randomized(net, seed, reinit).to(dtype)


@pytest.mark.parametrize("name,shape,free", MODELS, ids=[m[0] for m in MODELS])
def test_random_permutation_keeps_outputs(name, shape, free):
    """Measured (float64, this CPU): largest |Δ| / max |logit| 6.1e-15 (vgg16_bn), ≤ 4.4e-15
    for every other model; the assertion allows 1e-9."""
    model = build(name, shape)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    graph = trace(model, x[:1])
    assert len(graph.free_spaces()) == free
    assert graph[graph.order[0]].fixed and graph[graph.order[-1]].fixed
    if name == "vgg16_bn":  # the adaptive pool's 7×7 map flattens into 49 columns a channel
        assert Entry("classifier.0.weight", 1, 49) in graph[graph.layers[12].out_space].entries
        assert graph.layers[13].in_repeat == 49
    alignment = random_permutation(graph, torch.Generator().manual_seed(2))
    state = model.state_dict()
    permuted = alignment.apply(graph, state)
    moved = [k for k in state if not torch.equal(state[k], permuted[k])]
    assert set(moved) == set(graph.param_axes())  # every tensor of a free space moved
    with torch.no_grad():
        before = model(x)
        model.load_state_dict(permuted)  # in place: vgg16_bn is 1 GB in float64
        after = model(x)
    assert before.std(0).mean() > 0.01 * before.abs().mean()  # the input reaches the logits
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9 * before.abs().max())


def test_graph_records_spaces_layers_and_flatten():
    """Entries, producers, norms, feature points and the flatten repeat factor."""
    net = testing.tiny_model("cifar_resnet20", input_shape=(3, 32, 32))
    g = trace(net, torch.zeros(1, 3, 32, 32))
    assert len(g.layers) == 22 and g.layers[0].name == "conv1" and g.layers[-1].kind == "linear"
    stem = g[g.layers[0].out_space]
    assert {"conv1", "layer1.0.conv2", "layer1.2.conv2"} <= set(stem.producers)
    assert {Entry("bn1.running_var", 0), Entry("layer2.0.shortcut.0.weight", 1)} <= set(
        stem.entries)
    assert "bn1" in stem.norms and len(stem.feature_points) == 4  # stem + 3 block outputs
    short = next(la for la in g.layers if la.name == "layer2.0.shortcut.0")
    assert short.in_space == stem.id and g[short.out_space].size == 32
    assert g.layers[0].out_shape == (16, 32, 32)

    mlp = testing.tiny_model("mlp", input_shape=(1, 28, 28), activation="none")
    g = trace(mlp, torch.zeros(1, 1, 28, 28))
    # no activation: the features are the linear outputs the next layer reads
    assert [g[i].feature_points for i in g.order[1:-1]] == [["layers.1"], ["layers.2"],
                                                           ["layers.3"]]


def test_wrong_permutations_are_caught():
    """The invariance test can fail: leaving one BN running variance unpermuted changes the
    logits (measured: |Δ| 21.8 for logits up to 296); a flatten-expanded axis declared
    channel-wise instead of blockwise is refused."""
    model = build("cifar_resnet20", (3, 32, 32))
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    graph = trace(model, x[:1])
    alignment = random_permutation(graph, torch.Generator().manual_seed(0))
    space = graph[graph.layers[0].out_space]
    space.entries.remove(Entry("bn1.running_var", 0))
    with torch.no_grad():
        assert (permute_model(model, graph, alignment)(x) - model(x)).abs().max() > 1e-3

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 4 * 4, 5)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    net = Small().double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    g = trace(net, x[:1])
    assert Entry("fc.weight", 1, 16) in g[1].entries
    a = random_permutation(g, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(permute_model(net, g, a)(x), net(x))
        g[1].entries[g[1].entries.index(Entry("fc.weight", 1, 16))] = Entry("fc.weight", 1, 1)
        with pytest.raises(WeightlabError, match="fc.weight axis 1"):
            g.check(net.state_dict())


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if h.sum() > 0:
            h = h * 2
        return self.fc2(h)


class DeclaredBranchy(Branchy):
    def weightlab_feature_spec(self):
        return [Space(0, 8, [("fc1.weight", 1)], fixed=True, reason="input"),
                Space(1, 16, [("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)],
                      feature_points=["fc1"]),
                Space(2, 4, [("fc2.weight", 0), ("fc2.bias", 0)], fixed=True)]


def test_untraceable_model_names_the_operation():
    with pytest.raises(WeightlabError) as err:
        trace(Branchy(), torch.zeros(1, 8))
    msg = str(err.value)
    assert "\n" not in msg and "Branchy" in msg and "control flow" in msg
    assert "if h.sum() > 0:" in msg and "weightlab_feature_spec" in msg

    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):  # every other channel (a range x[:, a:b] is a piece of them)
            return self.conv(x)[:, ::2].mean((2, 3))

    with pytest.raises(WeightlabError, match="cuts its channel axis"):
        trace(Sliced(), torch.zeros(1, 3, 4, 4))

    class ChannelMean(Sliced):  # 4 channels, 4×4 pixels: a mean over channels mixes them
        def forward(self, x):
            return self.conv(x).mean(1).flatten(1)

    with pytest.raises(WeightlabError, match="unsupported operation Tensor.mean"):
        trace(ChannelMean(), torch.zeros(1, 3, 4, 4))


def test_hand_declared_spec_works():
    net = DeclaredBranchy().double()
    x = torch.randn(5, 8, dtype=torch.float64)
    g = trace(net, x[:1])
    assert [s.id for s in g.free_spaces()] == [1]
    assert [(la.name, la.in_space, la.out_space) for la in g.layers] == [("fc1", 0, 1),
                                                                         ("fc2", 1, 2)]
    a = random_permutation(g, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(permute_model(net, g, a)(x), net(x))
    out, feats = feature_reader(net, g, ["fc1"])(x)
    assert feats["fc1"].shape == (5, 16)

    class Wrong(Branchy):
        def weightlab_feature_spec(self):
            return [Space(1, 12, [("fc2.weight", 1)])]

    with pytest.raises(WeightlabError, match="fc2.weight axis 1 to have 12"):
        trace(Wrong(), torch.zeros(1, 8))


def test_concatenation_keeps_each_inputs_space():
    """torch.cat along the channels puts a's 4 channels at 0…3 and b's 6 at 4…9: both stay
    free spaces of their own (c's input columns at offsets 0 and 4), only input and logits are
    fixed, and a random permutation of a, b and c leaves the outputs unchanged (< 1e-12
    relative, float64; before, the concatenation fixed a, b and its output)."""
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 1)
            self.c = nn.Conv2d(10, 5, 1)
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            y = torch.relu(self.c(torch.cat([self.a(x), self.b(x)], dim=1)))
            return self.head(y.mean((2, 3)))

    from weightlab.graph.check import permutation_check

    net = Cat().double()
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    g = trace(net, x[:1])
    assert [s.producers for s in g.free_spaces()] == [["a"], ["b"], ["c"]]
    assert [s.reason for s in g.spaces.values() if s.fixed] == ["input", "logits"]
    assert sorted((e.offset, s.size) for s in g.free_spaces() for e in s.entries
                  if e.key == "c.weight" and e.axis == 1) == [(0, 4), (4, 6)]
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12 and res["permuted_spaces"] == 3


def test_feature_reader_reads_every_point():
    net = build("cifar_resnet20", (3, 32, 32), dtype=torch.float32)
    x = torch.randn(2, 3, 32, 32)
    g = trace(net, x[:1])
    points = [p for s in g.free_spaces() for p in s.feature_points]
    out, feats = feature_reader(net, g, points)(x)
    with torch.no_grad():
        torch.testing.assert_close(out, net(x))
    for s in g.free_spaces():
        for p in s.feature_points:
            assert feats[p].shape[1] == s.size and feats[p].min() >= 0  # post-ReLU


def test_alignment_algebra_and_saving():
    net = build("cifar_vgg11_bn", (3, 32, 32))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    g = trace(net, x[:1])
    p = random_permutation(g, torch.Generator().manual_seed(0))
    q = random_permutation(g, torch.Generator().manual_seed(1))
    state = net.state_dict()
    # compose: applying q∘p equals applying p then q; p⁻¹ undoes p
    both = q.compose(p).apply(g, state)
    seq = q.apply(g, p.apply(g, state))
    assert all(torch.equal(both[k], seq[k]) for k in state)
    back = p.inverse().apply(g, p.apply(g, state))
    assert all(torch.equal(back[k], state[k]) for k in state)
    # the general (merge, unmerge) form with permutation matrices gives the same tensors
    general = Alignment(merges={s: p.matrices(s, g[s].size) for s in p.perms})
    gen_state = general.apply(g, state)
    assert all(torch.allclose(gen_state[k], seq_k) for k, seq_k in p.apply(g, state).items())
    # saving round-trips through JSON; a non-permutation is refused by name
    loaded = Alignment.from_dict(json.loads(json.dumps(p.to_dict())))
    assert all(torch.equal(loaded.perms[s], p.perms[s]) for s in p.perms)
    bad = p.to_dict()
    bad["perms"]["1"][0] = bad["perms"]["1"][1]
    with pytest.raises(WeightlabError, match=r"perms\[1\] is not a permutation"):
        Alignment.from_dict(bad)
    with pytest.raises(WeightlabError, match="is fixed"):
        Alignment({0: torch.arange(3)}).apply(g, state)


def test_joint_merge_splits_per_model():
    """A joint (C × 2C) merge splits into per-model blocks whose transforms sum to
    M_out·[W_a; W_b]·U_in (ZipIt!'s merged weight)."""
    net = build("mlp", (1, 4, 4))
    g = trace(net, torch.zeros(1, 1, 4, 4, dtype=torch.float64))
    eye = torch.eye(512, dtype=torch.float64)
    perm = torch.randperm(512, generator=torch.Generator().manual_seed(0))
    joint = Alignment(merges={s.id: (torch.cat([eye, eye[perm]], 1) / 2,
                                     torch.cat([eye, eye[perm].T], 0)) for s in g.free_spaces()})
    part_a, part_b = joint.split(g, 2)
    sa, sb = net.state_dict(), build("mlp", (1, 4, 4), seed=1).state_dict()
    w = part_a.apply(g, sa)["layers.1.weight"] + part_b.apply(g, sb)["layers.1.weight"]
    torch.testing.assert_close(w, (sa["layers.1.weight"] + sb["layers.1.weight"][perm]) / 2)


class _CrossStage(nn.Module):
    """CSPNet's split: a conv's output cut in two along the channels, one half through more
    layers, both concatenated again."""

    def __init__(self):
        super().__init__()
        self.expand, self.bn = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        self.inner = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        a, b = torch.relu(self.bn(self.expand(x))).split((4, 4), dim=1)
        y = torch.cat([a, torch.relu(self.inner(b))], dim=1)
        return self.head(y.mean((2, 3)))


def test_a_split_of_a_conv_output_splits_its_space():
    """The expand conv's 8 channels become two spaces of 4 (its weight rows and BN tensors at
    offsets 0 and 4); the inner conv's space is free; the check is invariant (< 1e-12;
    measured ≈ 1e-16). Before, the pieces of the split lost their channels silently and
    timm's cspresnet50 failed the check (relative change 0.58)."""
    net = _CrossStage().double().eval()
    testing.randomize_norms(net, 0)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    g = trace(net, x[:1])
    halves = [s for s in g.spaces.values() if any(e.key == "expand.weight" and e.axis == 0
                                                  for e in s.entries)]
    assert sorted(s.size for s in halves) == [4, 4]
    assert sorted(e.offset for s in halves for e in s.entries if e.key == "bn.running_var") \
        == [0, 4]
    from weightlab.graph.check import permutation_check

    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12


def test_powers_and_upsampling_carry_the_channels():
    """``s · relu(x)² + b`` (StarReLU, scalar s and b) acts on each value alone and
    ``nn.Upsample`` / ``F.interpolate`` resize each channel's map alone (HRNet's fuse
    layers): a low-resolution branch upsampled and added to a high-resolution one is one
    space with it; the 2 free spaces permuted at random leave the logits unchanged
    (< 1e-12 relative, float64)."""
    import torch.nn.functional as F
    from weightlab.graph.check import permutation_check

    class Fuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.hi, self.lo = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.scale = nn.Parameter(torch.tensor(0.8))
            self.shift = nn.Parameter(torch.tensor(-0.1))
            self.mix, self.head = nn.Conv2d(4, 5, 1), nn.Linear(5, 3)

        def forward(self, x):
            y = self.hi(x) + self.up(self.lo(x))
            y = self.scale * torch.relu(y) ** 2 + self.shift
            z = F.interpolate(self.mix(y), scale_factor=0.5, mode="bilinear")
            return self.head(z.pow(2).mean((2, 3)))

    net = Fuse().double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    assert [s.reason for s in g.spaces.values() if s.fixed] == ["input", "logits"]
    assert sorted(s.producers for s in g.free_spaces()) == [["hi", "lo"], ["mix"]]
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12, res
