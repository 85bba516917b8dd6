"""Attention in the traced graph: head spaces (query·key, value·output) tied by one head
permutation, packed projections, class tokens and position embeddings, and every torchvision
classifier checked for permutation invariance."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from weightlab import testing
from weightlab.alignment import Alignment, permute_model, random_permutation
from weightlab.graph import trace
from weightlab.graph.check import permutation_check
from weightlab.matching.assignment import solve_grouped


def test_vit_spaces_heads_and_ties():
    """torchvision ViT (2 blocks, 4 heads of 8): 9 spaces — input, the residual stream (class
    token, position embedding, every LayerNorm and projection output), per block a query·key
    and a value·output space of 4 heads tied to each other and a 64-wide MLP space, logits."""
    net = testing.torchvision_vit()
    g = trace(net, torch.randn(1, 3, 28, 28))
    sizes = sorted((s.size, s.groups) for s in g.free_spaces())
    assert sizes == [(32, 1), (32, 4), (32, 4), (32, 4), (32, 4), (64, 1), (64, 1)]
    stream = next(s for s in g.free_spaces() if s.groups == 1 and s.size == 32)
    keys = {e.key for e in stream.entries}
    assert {"class_token", "encoder.pos_embedding", "conv_proj.weight",
            "encoder.layers.encoder_layer_0.self_attention.out_proj.weight"} <= keys
    for s in g.free_spaces():
        if s.groups > 1:
            assert g[s.tie].tie == s.id and g[s.tie].groups == 4
    qk = next(s for s in g.free_spaces() if s.groups > 1 and any(
        p.endswith("@q") for p in s.feature_points))
    offsets = sorted(e.offset for e in qk.entries if e.key.endswith("in_proj_weight"))
    assert offsets == [0, 32]  # Q rows at 0, K rows at E: one permutation for both


def test_breaking_a_head_tie_changes_the_function():
    """The structure is necessary, not just sufficient: moving heads differently in a block's
    query·key and value·output spaces, or moving one channel to another head, changes the
    outputs by 2–40 % relative (measured 0.07 and 0.42), while the tied permutation changes
    them by < 1e-12."""
    net = testing.torchvision_vit().double()
    x = torch.randn(8, 3, 28, 28, dtype=torch.float64)
    g = trace(net, x[:1])
    y = net(x)
    ok = random_permutation(g, torch.Generator().manual_seed(0))
    assert float((permute_model(net, g, ok)(x) - y).abs().max()) < 1e-12 * float(y.abs().max())
    qk = next(s for s in g.free_spaces() if s.groups > 1)
    untied = Alignment(dict(ok.perms))
    untied.perms[qk.id] = torch.cat([torch.arange(8, 16), torch.arange(8), torch.arange(16, 32)])
    untied.perms[qk.tie] = torch.arange(32)  # heads 0 and 1 swapped in Q·K only
    across = Alignment({qk.id: torch.cat([torch.tensor([8]), torch.arange(1, 8),
                                          torch.tensor([0]), torch.arange(9, 32)])})
    for bad in (untied, across):
        try:
            z = permute_model(net, g, bad)(x)
        except Exception as e:  # a permutation splitting heads is refused for per-head tensors
            pytest.fail(f"permuting failed: {e}")
        assert float((z - y).abs().max()) > 0.02 * float(y.abs().max())


class _Attend(nn.Module):
    """nn.MultiheadAttention in its other forms: sequence-first, separate key/value sizes
    (unpacked q/k/v weights, cross-attention from another space), bias_k/bias_v, zero attention."""

    def __init__(self, batch_first: bool):
        super().__init__()
        self.batch_first = batch_first
        self.q_in, self.kv_in = nn.Linear(6, 12), nn.Linear(6, 10)
        self.self_attn = nn.MultiheadAttention(12, 3, batch_first=batch_first, add_bias_kv=True)
        self.cross = nn.MultiheadAttention(12, 2, kdim=10, vdim=10, batch_first=batch_first,
                                           add_zero_attn=True)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x):  # x: (N, L, 6)
        if not self.batch_first:
            x = x.transpose(0, 1)
        q, kv = torch.relu(self.q_in(x)), torch.relu(self.kv_in(x))
        h = q + self.self_attn(q, q, q, need_weights=False)[0]
        h = self.norm(h + self.cross(h, kv, kv)[0])
        return self.head(h.mean(1 if self.batch_first else 0))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_forms_are_invariant(batch_first):
    """Packed and unpacked projections, bias_k/bias_v, add_zero_attn, sequence-first layout:
    a random permutation of all 6 free spaces (the query stream, the cross-attention's
    key/value input space, two tied pairs of head spaces) changes the outputs by < 1e-12
    relative (float64; measured ≈ 1e-16)."""
    net = _Attend(batch_first).double().eval()
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    g = trace(net, x[:1])
    heads = sorted(s.groups for s in g.free_spaces() if s.groups > 1)
    assert heads == [2, 2, 3, 3]
    assert any(e.key == "self_attn.bias_k" for s in g.free_spaces() for e in s.entries)
    assert any(e.key == "cross.k_proj_weight" and e.axis == 1 for s in g.free_spaces()
               for e in s.entries)
    res = permutation_check(net, g, x, seed=3)
    assert res["invariant"] and res["relative"] < 1e-12
    assert res["permuted_spaces"] == len(g.free_spaces()) == 6


def test_solve_grouped_equals_brute_force():
    """Two tied spaces of 3 heads × 2 channels, random scores: solve_grouped's total equals the
    best over all 3!·(2!)³·(2!)³ = 384 head-respecting pairs of permutations that share one
    head permutation (enumerated here)."""
    gen = torch.Generator().manual_seed(0)
    scores = [torch.randn(6, 6, generator=gen, dtype=torch.float64) for _ in range(2)]
    perms = solve_grouped(scores, 3)

    def total(ps):
        return sum(float(s[torch.arange(6), p].sum()) for s, p in zip(scores, ps, strict=True))

    best = -1e9
    for tau in itertools.permutations(range(3)):
        for flips in itertools.product(range(2), repeat=6):
            ps = []
            for k in range(2):
                p = []
                for g in range(3):
                    inner = [0, 1] if not flips[3 * k + g] else [1, 0]
                    p += [2 * tau[g] + j for j in inner]
                ps.append(torch.tensor(p))
            best = max(best, total(ps))
    assert abs(total(perms) - best) < 1e-12
    for p in perms:  # heads stay whole: channels 2g, 2g+1 land in one head
        assert torch.equal(p.reshape(3, 2) // 2, (p.reshape(3, 2) // 2)[:, :1].expand(3, 2))


def _assert_recovers_planted(a: nn.Module, matcher: str, size: int, seed: int) -> None:
    """Plant a random permutation of every free space of ``a`` (seed ``seed``), match the copy
    back with ``matcher`` (activation: 64 random inputs, seed ``seed + 1``) and require every
    tensor to come back exactly."""
    from weightlab.matching.activation import activation_matching
    from weightlab.matching.weight import weight_matching

    g = trace(a, torch.randn(1, 3, size, size))
    b = permute_model(a, g, random_permutation(g, torch.Generator().manual_seed(seed)))
    if matcher == "activation":
        x = torch.randn(64, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
        al = activation_matching(g, a, b, [(x, torch.zeros(64, dtype=torch.long))])
    else:
        al = weight_matching(g, a.state_dict(), b.state_dict())
    back = permute_model(b, g, al).state_dict()
    assert max(float((back[k] - v).abs().max()) for k, v in a.state_dict().items()) == 0.0


@pytest.mark.parametrize("matcher", ["activation", "weight"])
def test_matching_recovers_planted_head_permutations(matcher):
    """A random ViT and a copy with a planted random permutation of all 7 free spaces (heads
    moved, channels moved within heads, tied Q·K/V·O): activation matching (Q, K, V read from
    the attention's inputs) and weight matching both recover it exactly (max |Δ| 0.0 over
    every tensor)."""
    _assert_recovers_planted(testing.torchvision_vit(1), matcher, 28, seed=2)


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_vit_and_swin_from_the_cli(cli, name):
    """`weightlab graph vit_b_16 --check` (12 blocks: 37 free spaces, 12 × 2 of them head
    spaces; measured 3.6e-15 relative) and `swin_t` (relative position bias tables follow the
    head permutation; patch merging tiles 2×2 neighbours' channels, so the stages' streams
    are free too: 40 of 42 free, only input and logits fixed)."""
    res = cli.json("graph", name, "--check")
    assert res["check"]["invariant"] and res["check"]["relative"] < 1e-12
    assert res["free_spaces"] == {"vit_b_16": 37, "swin_t": 40}[name]
    assert sum(s["heads"] > 1 for s in res["spaces"] if s["free"]) == 24
    assert res["check"]["randomized"] > 0  # the zero-initialized head got random values


def test_torchvision_names_are_every_classifier():
    import torchvision
    from weightlab.models.families import TORCHVISION_CLASSIFIERS

    assert sorted(TORCHVISION_CLASSIFIERS) == sorted(
        torchvision.models.list_models(module=torchvision.models))


def _model_and_input(name: str):
    import torchvision

    kw = {}
    if name.startswith("vit_"):  # position embeddings fix the size: one patch grid of 2×2
        size = 28 if name.startswith("vit_h") else 32
        kw["image_size"] = size
    elif name.startswith("swin"):
        size = 32
    elif name == "maxvit_t":  # its window partition needs 224
        size = 224
    else:
        size = 75 if name == "inception_v3" else 64
    net = torchvision.models.get_model(name, weights=None, num_classes=10, **kw).eval()
    return net, torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


# over 60 M parameters: their float64 checks take most of a minute each on two cores; each is a
# larger sibling of a model checked here (same blocks), and all 79 were checked with
# `python -m benchmarks.bench_tracing --models …` (benchmarks/RESULTS.md)
HEAVY = {"alexnet", "convnext_base", "convnext_large", "efficientnet_b7", "efficientnet_v2_l",
         "regnet_x_32gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf",
         "resnext101_32x8d", "resnext101_64x4d", "swin_b", "swin_v2_b", "vgg11", "vgg11_bn",
         "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16", "vit_b_32",
         "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet50_2", "wide_resnet101_2"}


def _classifiers():
    from weightlab.models.families import TORCHVISION_CLASSIFIERS

    return [n for n in TORCHVISION_CLASSIFIERS if n not in HEAVY]


@pytest.mark.slow
@pytest.mark.parametrize("name", _classifiers())
def test_every_torchvision_classifier_is_permutation_invariant(name):
    """Every classifier of torchvision.models up to 60 M parameters (52 of 80, MaxViT's einsum
    attention included; the heavier ones are siblings, checked by the benchmark), at small
    inputs with 10 classes: a
    seeded random permutation of every free space changes the outputs by < 1e-12 relative
    (float64; measured 2e-16 … 7.6e-15 over all 79 traced models, ViT-H/14 included)."""
    net, x = _model_and_input(name)
    res = permutation_check(net, trace(net, x), x)
    assert res["invariant"] and res["relative"] < 1e-12


class _EinsumAttention(torch.nn.Module):
    """MaxViT's attention on (B, G, P, C) windows: q·k and scores·v written with einsum."""

    def __init__(self, c: int = 16, heads: int = 2,
                 form: str = "B G H I D, B G H J D -> B G H I J"):
        super().__init__()
        self.heads, self.form = heads, form
        self.qkv, self.proj = torch.nn.Linear(c, 3 * c), torch.nn.Linear(c, c)
        self.head = torch.nn.Linear(c, 5)

    def forward(self, x):
        b, g, p, c = x.shape
        q, k, v = torch.chunk(self.qkv(x), 3, dim=-1)
        q = q.reshape(b, g, p, self.heads, -1).permute(0, 1, 3, 2, 4)
        k = k.reshape(b, g, p, self.heads, -1).permute(0, 1, 3, 2, 4)
        v = v.reshape(b, g, p, self.heads, -1).permute(0, 1, 3, 2, 4)
        a = torch.einsum(self.form, q, k).softmax(dim=-1)
        y = torch.einsum("B G H I J, B G H J D -> B G H I D", a, v)
        return self.head(self.proj(y.permute(0, 1, 3, 2, 4).reshape(b, g, p, c)).mean(2))


def test_einsum_attention_is_traced_and_other_forms_refused():
    """einsum in attention's two matmul forms (MaxViT) ties heads like q @ kᵀ and scores @ v:
    the query·key and value·output spaces are free, 2 heads each, tied; invariant to < 1e-12.
    Contracting anything but the head dimension (here the heads themselves) is one line."""
    from weightlab.errors import WeightlabError

    torch.manual_seed(0)
    net = _EinsumAttention().eval()
    x = torch.randn(2, 3, 4, 16, generator=torch.Generator().manual_seed(1))
    g = trace(net, x)
    heads = [s for s in g.free_spaces() if s.groups == 2]
    assert len(heads) == 2 and heads[0].tie == heads[1].id
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12
    bad = _EinsumAttention(form="B G H I D, B G K J D -> B G I J").eval()
    with pytest.raises(WeightlabError) as e:
        trace(bad, x)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith("_EinsumAttention: ")
    assert "einsum" in msg and "weightlab_feature_spec" in msg


def test_the_small_vit_family_is_buildable_by_name_and_invariant(cli):
    """`vit_d4_w64_p7`: 4 blocks of 64 channels in 4 heads, 7×7 patches on 28×28 MNIST
    (17 tokens); 13 free spaces (the stream, 4 × (query·key, value·output, MLP)); a random
    permutation changes the outputs by 7.7e-16 relative (measured)."""
    res = cli.json("graph", "vit_d4_w64_p7", "--check")
    assert res["input_shape"] == [1, 28, 28] and res["free_spaces"] == 13
    assert res["check"]["invariant"] and res["check"]["relative"] < 1e-12
    code, _, err = cli("graph", "vit_w30_h4")
    assert code != 0 and "does not split into 4 heads" in err


def test_attention_flops_equal_torch_flop_counter():
    """nn.MultiheadAttention's projections and its two matrix products are counted: with
    need_weights=True (torch computes Q·Kᵀ and A·V with bmm, which FlopCounterMode counts)
    the count equals FlopCounterMode's exactly, separate key/value sizes included (54,656
    FLOPs). With need_weights=False torch uses scaled_dot_product_attention, which
    FlopCounterMode does not count on a CPU: the small ViT's count is FlopCounterMode's plus
    exactly 4 blocks × 2 × (2·17·17·64) FLOPs of attention products."""
    from torch.utils.flop_counter import FlopCounterMode
    from weightlab.flopcount import count
    from weightlab.models.vit import ViT

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.MultiheadAttention(32, 4, batch_first=True, kdim=24, vdim=20)

        def forward(self, x):
            return self.a(x[..., :32], x[..., :24], x[..., :20], need_weights=True)[0]

    def torch_count(net, shape):
        with FlopCounterMode(display=False) as fc:
            net(torch.zeros(1, *shape))
        return fc.get_total_flops()

    net = Cross()
    assert count(net, (7, 40))["flops"] == torch_count(net, (7, 40)) == 54656
    vit = ViT((1, 28, 28), 10).eval()
    assert count(vit, (1, 28, 28))["flops"] == torch_count(vit, (1, 28, 28)) + 4 * 2 * (
        2 * 17 * 17 * 64)


def _timm_vit(seed: int):
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10,
                             img_size=32, patch_size=8, depth=2).eval()


def test_attention_by_hand_is_traced():
    """timm's Attention (fused qkv linear reshaped to (B, N, 3, H, d), permuted, unbound into
    q, k, v; scaled_dot_product_attention; heads merged back by transpose + reshape): the
    qkv output splits into a query·key space (rows at offsets 0 and E) and a value·output
    space (offset 2E), 3 heads each, tied; per block 3 free spaces, plus the stream:
    7 of 9 spaces free, invariant to < 1e-12 (measured 9e-16)."""
    net = _timm_vit(0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    g = trace(net, x[:1])
    assert len(g.free_spaces()) == 7 and len(g.spaces) == 9
    qk = [s for s in g.free_spaces() if s.groups == 3 and s.tie is not None
          and sorted(e.offset for e in s.entries if e.key.endswith("qkv.weight")) == [0, 192]]
    assert len(qk) == 2 and all(any(p.endswith("@heads:1,3") for p in s.feature_points)
                                for s in qk)
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12


@pytest.mark.parametrize("matcher", ["activation", "weight"])
def test_matching_recovers_planted_permutations_in_timm_vit(matcher):
    """A random timm ViT (2 blocks, 3 heads of 64) and a copy with a planted permutation of
    every free space: activation matching (q, k, v read at the unbound heads) and weight
    matching recover it exactly (max |Δ| 0.0)."""
    _assert_recovers_planted(_timm_vit(2), matcher, 32, seed=3)


TIMM = ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "mixer_s16_224",
        "resmlp_12_224", "poolformer_s12", "convnext_atto", "mobilenetv3_small_050",
        "fastvit_t8", "efficientnet_b0", "regnety_002", "resnet18", "beit_base_patch16_224"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TIMM)
def test_timm_families_are_permutation_invariant(name):
    """timm models of the families ViT, DeiT (distillation token), MLP-Mixer (token-mixing
    linears over (N, C, T)), ResMLP (addcmul affine), PoolFormer, ConvNeXt (layer scale viewed
    (1, C, 1, 1)), MobileNetV3 (timm's functional Linear), FastViT, EfficientNet, RegNet,
    ResNet, BEiT (its qkv bias concatenated in forward splits into the parts; its relative
    position bias, gathered by index, moves with the heads: one table column per head) at
    their own input sizes:
    invariant to < 1e-12 (measured 4e-18 … 2.4e-15)."""
    timm = pytest.importorskip("timm")
    kw = {"img_size": 32, "patch_size": 8, "depth": 2} if name.startswith("beit") else {}
    net = timm.create_model(name, pretrained=False, num_classes=10, **kw).eval()
    shape = (3, 32, 32) if kw else net.pretrained_cfg["input_size"]
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12 and g.free_spaces()


def test_rope_keeps_channels_in_place_within_heads():
    """EVA-02's rotary position embedding rotates fixed pairs of each head's q and k channels
    by position-dependent angles: the query·key space is rigid (3 units, one per head, each a
    block of 64 rows of qkv and q_bias) and moves only with the heads of its tied
    value·output space. Invariant to < 1e-12 (measured 1.4e-16); letting the channels move
    within heads as well changes the outputs by 1.8e-3 relative (measured), so the check can
    tell (the attention weights scaled ×20 so that the blocks matter at random init)."""
    import copy

    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("eva02_tiny_patch14_224", pretrained=False, num_classes=10,
                            img_size=(56, 56), depth=2).eval()
    with torch.no_grad():
        for block in net.blocks:
            block.attn.qkv.weight.mul_(20)
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    g = trace(net, x)
    qk = [s for s in g.free_spaces() if s.groups == 3 and s.size == 3]
    assert len(qk) == 2 and len(g.free_spaces()) == 7
    for s in qk:
        assert sorted((e.key.split(".")[-1], e.offset, e.repeat) for e in s.entries) == [
            ("q_bias", 0, 64), ("weight", 0, 64), ("weight", 192, 64)]
        assert g[s.tie].size == 192 and g[s.tie].groups == 3
    assert permutation_check(net, g, x)["relative"] < 1e-12
    loose = copy.deepcopy(g)  # the same spaces with channels free within heads: not invariant
    for s in qk:
        loose[s.id].size = 192
        loose[s.id].entries = [e._replace(repeat=1) for e in s.entries]
    assert permutation_check(net, loose, x)["relative"] > 1e-5


@pytest.mark.parametrize("matcher", ["weight", "activation"])
@pytest.mark.parametrize("name, size, kw", [
    ("eva02_tiny_patch14_224", 56, {"depth": 2}),
    ("swin_tiny_patch4_window7_224", 56, {"depths": (1, 1, 1, 1)}),
    ("levit_128s", 64, {})], ids=["eva-rope", "swin-patch-merging", "levit-head-first"])
def test_matching_recovers_rigid_and_tiled_spaces(name, size, kw, matcher):
    """Weight and activation matching recover a planted permutation exactly (max |Δ| 0.0)
    where heads are rigid (EVA's RoPE query·key space of one unit per head, tied to a
    value·output space of 64 channels per head; LeViT's head-first q/k/v blocks and a
    subsampling query of its own, three spaces sharing one head permutation) and where patch
    merging tiles four neighbours' channels (Swin). Activation matching reads a rigid space's
    heads at q, k and v, each head's channels as observations of the head unit."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10, img_size=(size, size),
                            **kw).eval()
    _assert_recovers_planted(net, matcher, size, seed=3)


def test_rigid_space_statistics_pair_channels_within_heads():
    """The statistics of a rigid head space (one unit per head) from features of H·d
    channels, head-major: E[a_i b_j] = (1/d) Σ_c E[a_ic b_jc] over samples and positions,
    restated here with einsum on random features (3 heads of 4 channels, 5 tokens)."""
    from weightlab.matching.features import FeatureStats, _rows, _update

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 6, 12, 5, generator=gen, dtype=torch.float64)
    stats: dict[int, FeatureStats] = {}
    _update(stats, 0, torch.cat([_rows(a, 3), _rows(b, 3)], dim=1), 2)
    ah, bh = a.unflatten(1, (3, 4)), b.unflatten(1, (3, 4))  # (N, heads, d, tokens)
    ref = torch.einsum("nict,njct->ij", ah, bh) / (6 * 4 * 5)
    assert torch.allclose(stats[0].block(0, 1, "inner"), ref, atol=1e-6)
    with pytest.raises(ValueError, match="12 channels for a space of 5 units"):
        _rows(a, 5)


class _ChannelAttention(nn.Module):
    """Cross-covariance attention (XCiT/EdgeNeXt) on tokens (B, N, 5): per head h,
    A_h = softmax_row(q̂_h k̂_hᵀ τ_h) over channels (q̂, k̂: L2-normalized along the tokens),
    out_h = A_h v_h, projected and added to the tokens."""

    def __init__(self, c: int = 12, heads: int = 3):
        super().__init__()
        self.heads = heads
        self.embed, self.qkv = nn.Linear(5, c), nn.Linear(c, 3 * c)
        self.proj, self.head = nn.Linear(c, c), nn.Linear(c, 4)
        self.temperature = nn.Parameter(torch.linspace(0.5, 2.0, heads).reshape(heads, 1, 1))

    def forward(self, x):
        import torch.nn.functional as F

        x = self.embed(x)
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 4, 1).unbind(0)
        a = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) \
            * self.temperature
        y = (a.softmax(dim=-1) @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        x = x + self.proj(y)
        return self.head(x.mean(1))


def test_channel_attention_spaces_and_a_wrong_grouping():
    """XCA: two spaces of 12 = 3 heads × 4, tied by one head permutation — query·output (q's
    rows of the fused qkv at offset 0, proj's columns, τ one value per head) and key·value
    (rows at offsets 12 and 24); with the token stream 3 free spaces, permuted at random
    (seed 0): invariant (< 1e-12 relative, float64; measured 2e-16). Token attention's
    grouping instead (k's rows with q's, proj's columns with v's) is not a symmetry of the
    channel-channel scores (measured 0.50 relative; asserted > 1e-3), nor is τ left in place
    while the heads move (seed 0 moves them: measured 0.13)."""
    net = _ChannelAttention().double().eval()
    x = torch.randn(2, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    q_out = next(s for s in g.free_spaces() if any(e.key == "proj.weight" and e.axis == 1
                                                   for e in s.entries))
    k_v = g[q_out.tie]
    assert (q_out.size, q_out.groups, k_v.size, k_v.groups, k_v.tie) == (12, 3, 12, 3, q_out.id)
    assert sorted(e.offset for e in q_out.entries if e.key == "qkv.weight") == [0]
    assert sorted(e.offset for e in k_v.entries if e.key == "qkv.weight") == [12, 24]
    assert [(e.axis, e.per_group) for e in q_out.entries if e.key == "temperature"] == [
        (0, True)]
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12, res
    token_like = copy.deepcopy(g)  # q with k (offsets 0, 12), v with proj's columns
    qs, ks = token_like[q_out.id], token_like[k_v.id]
    k_rows = [e for e in ks.entries if e.offset == 12]
    proj_cols = [e for e in qs.entries if e.key == "proj.weight"]
    qs.entries = [e for e in qs.entries if e not in proj_cols] + k_rows
    ks.entries = [e for e in ks.entries if e not in k_rows] + proj_cols
    bad = permutation_check(net, token_like, x)
    assert not bad["invariant"] and bad["relative"] > 1e-3, bad
    still_tau = copy.deepcopy(g)
    still_tau[q_out.id].entries = [e for e in q_out.entries if e.key != "temperature"]
    bad = permutation_check(net, still_tau, x)
    assert not bad["invariant"] and bad["relative"] > 1e-3, bad
