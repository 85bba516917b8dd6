"""``weightlab graph timm/<name> --check`` for the smallest model of each timm family. The
passing ones are traced exactly: a random permutation of every free channel space leaves the
logits unchanged. The others stop at the first operation the traced graph does not support,
in one line (the table in plugins/timm/README.md lists them)."""

from __future__ import annotations

import pytest

# family → a small model of it and the input it is checked at: 3×64×64, or for one timm builds
# for a fixed size its own size or a smaller one it builds for (--input-shape sets img_size)
PASSING = {
    "resnet": ("resnet10t", 64), "seresnet": ("seresnet18", 64),
    "resnetv2": ("resnetv2_18", 64), "convnext": ("convnext_atto", 64),
    "efficientnet": ("efficientnet_b0", 64), "efficientnetv2": ("efficientnetv2_rw_t", 64),
    "tinynet": ("tinynet_e", 64), "mnasnet": ("mnasnet_small", 64),
    "mobilenetv3": ("mobilenetv3_small_050", 64),
    "mobilenetv4": ("mobilenetv4_conv_small", 64), "lcnet": ("lcnet_050", 64),
    "regnetx": ("regnetx_002", 64), "regnety": ("regnety_002", 64),
    "poolformer": ("poolformer_s12", 64), "fastvit": ("fastvit_t8", 64),
    "repvgg": ("repvgg_a0", 64), "mobileone": ("mobileone_s0", 64),
    "hgnetv2": ("hgnetv2_b0", 64), "densenet": ("densenet121", 64),
    "vovnet": ("vovnet39a", 64), "selecsls": ("selecsls42", 64), "dla": ("dla34", 64),
    "convmixer": ("convmixer_768_32", 64), "inception_v3": ("inception_v3", 128),
    "mixer": ("mixer_s32_224", 224), "resmlp": ("resmlp_12_224", 224),
    "vit": ("vit_tiny_patch16_224", 224), "deit": ("deit_tiny_patch16_224", 224),
    "cspnet": ("cspresnet50", 64),
    "swin": ("swin_tiny_patch4_window7_224", 224), "eva": ("eva02_tiny_patch14_224", 224),
    "levit": ("levit_128s", 224), "coatnet": ("coatnet_pico_rw_224", 224),
    "maxvit": ("maxvit_pico_rw_256", 256), "edgenext": ("edgenext_xx_small", 64),
    "ghostnet": ("ghostnet_050", 64), "rexnet": ("rexnet_100", 64), "dpn": ("dpn48b", 64),
    "poolformerv2": ("poolformerv2_s12", 64), "hrnet": ("hrnet_w18_small", 64),
}
# fixed-size attention models (per-head relative position biases, shifted-window masks and
# patch merging, einsum, RoPE, head-first q/k/v blocks): checked here built for a smaller
# input (the plugin's img_size), the CLI at their own size taking minutes on two cores
SMALL = {"swin": 56, "eva": 56, "levit": 64, "coatnet": 64, "maxvit": 64}


def _shape(size: int) -> tuple[str, ...]:
    return ("--input-shape", f"3,{size},{size}")


@pytest.mark.parametrize("model, size", [v for k, v in PASSING.items() if k not in SMALL],
                         ids=[k for k in PASSING if k not in SMALL])
def test_graph_check_is_invariant(cli, model, size):
    res = cli.json("graph", f"timm/{model}", "--check", *_shape(size))
    assert res["input_shape"] == [3, size, size] and res["free_spaces"] > 0
    check = res["check"]
    # default tolerance 1e-4 relative: efficientnetv2_rw_t's random-init logits reach 1e5
    assert check["invariant"] and check["permuted_spaces"] > 0, check


@pytest.mark.parametrize("family", list(SMALL))
def test_fixed_size_attention_families_are_invariant(family):
    """What `weightlab graph timm/<name> --check` runs, on the model built for SMALL[family]
    (the plugin's img_size): every free space permuted, outputs unchanged to < 1e-12 relative
    (measured 3e-16 … 3e-15); only the input and the logits are fixed."""
    import torch
    from weightlab import plugins
    from weightlab.graph import trace
    from weightlab.graph.check import permutation_check

    size = SMALL[family]
    comp = plugins.registry().create("models", f"timm/{PASSING[family][0]}", {"img_size": size})
    torch.manual_seed(0)
    net = comp.build(comp.default_input_shape, 10).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    g = trace(net, x)
    assert [s.reason for s in g.spaces.values() if s.fixed] == ["input", "logits"]
    res = permutation_check(net, g, x)
    assert res["invariant"] and res["relative"] < 1e-12 and res["permuted_spaces"] > 0, res


def test_an_unsupported_family_is_one_error_line(cli):
    """NF-ResNet standardizes its conv weights in forward (torch.conv2d with a computed
    weight): no rule follows a layer whose weight is not a parameter."""
    code, out, err = cli("graph", "timm/nf_resnet26", "--check", *_shape(64))
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: NormFreeNet: ") and "torch.conv2d" in err \
        and "weightlab_feature_spec" in err


def test_edgenext_spaces_split_streams_and_channel_attention(cli):
    """`weightlab graph timm/edgenext_xx_small --check` at 3×64×64: 25 of 28 spaces free
    (fixed: input, logits, the constant sin/cos grid the position encoding's conv reads);
    each SplitTransposeBlock cuts its stage's stream into chunks (48 → 24 + 24, 88 → 30 + 30
    + 28 with the first two one space, 168 → 42 × 3 one space + 42), its XCA gives a
    query·output and a key·value space of 4 heads, tied; invariant (< 1e-12 relative,
    float64; measured 3.3e-16)."""
    res = cli.json("graph", "timm/edgenext_xx_small", "--check", *_shape(64))
    assert (res["free_spaces"], len(res["spaces"])) == (25, 28)
    fixed = [s["reason"] for s in res["spaces"] if not s["free"]]
    assert fixed == ["input", "a constant read by stages.1.blocks.1.pos_embd.token_projection",
                     "logits"]
    assert sorted(s["size"] for s in res["spaces"] if s["heads"] == 4) == [48, 48, 88, 88,
                                                                           168, 168]
    assert res["check"]["invariant"] and res["check"]["relative"] < 1e-12


@pytest.mark.parametrize("matcher", ["weight", "activation"])
def test_matching_recovers_a_permuted_edgenext(matcher):
    """A random edgenext_xx_small (seed 0) and a copy with a seeded random permutation of all
    25 free spaces (chunked streams, XCA heads and channels, τ per head; the largest weight
    change it makes is 0.08, timm's init being N(0, 0.02²), asserted > 0.01): weight matching,
    and activation matching on 32 random 64×64 inputs (the stream's parts read at each
    chunk's offsets), bring every tensor back exactly
    (max |Δ| 0.0), so the merge midpoint ½(θ_A + π(θ_B)) is the model itself: its logits
    equal A's (float64, < 1e-12 relative)."""
    import copy

    import torch
    from weightlab import plugins
    from weightlab.alignment import permute_model, random_permutation
    from weightlab.graph import trace
    from weightlab.matching.activation import activation_matching
    from weightlab.matching.weight import weight_matching

    comp = plugins.registry().create("models", "timm/edgenext_xx_small", {})
    torch.manual_seed(0)
    a = comp.build((3, 64, 64), 10).double().eval()
    x = torch.randn(32, 3, 64, 64, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    g = trace(a, x[:2])
    b = permute_model(a, g, random_permutation(g, torch.Generator().manual_seed(1)))
    moved = max(float((b.state_dict()[k] - v).abs().max()) for k, v in a.state_dict().items())
    if matcher == "weight":
        al = weight_matching(g, a.state_dict(), b.state_dict())
    else:
        al = activation_matching(g, a, b, [(x, torch.zeros(32, dtype=torch.long))])
    back = permute_model(b, g, al).state_dict()
    assert moved > 0.01
    assert max(float((back[k] - v).abs().max()) for k, v in a.state_dict().items()) == 0.0
    mid = copy.deepcopy(a)
    mid.load_state_dict({k: (v + back[k]) / 2 for k, v in a.state_dict().items()})
    with torch.no_grad():
        y, z = a(x[:2]), mid.eval()(x[:2])
    assert float((y - z).abs().max() / y.abs().max()) < 1e-12


def test_the_documented_table_lists_the_passing_families():
    from weightlab import testing

    readme = (testing.REPO / "plugins" / "timm" / "README.md").read_text()
    page = (testing.REPO / "docs" / "plugins" / "timm.md").read_text()
    table = readme[readme.index("| family |"):]
    assert table in page, "docs/plugins/timm.md and plugins/timm/README.md tables differ"
    for family, (model, size) in PASSING.items():
        assert f"| {family} | `{model}` | 3×{size}×{size} | passes |" in table, family
    assert "| nfnet | `nf_resnet26` | 3×64×64 | `NormFreeNet: " in table


@pytest.mark.parametrize("model, spaces, moved", [("ghostnet_050", 31, 0.67),
                                                  ("rexnet_100", 46, 2.8), ("dpn48b", 25, 0.63)])
def test_weight_matching_recovers_models_that_slice_their_channels(model, spaces, moved):
    """GhostNet (``cat(primary, cheap)[:, :c]``), ReXNet (partial residual) and DPN (dual
    paths ``x[:, :c]``, ``x[:, c:]``), random (seed 0), float64, at 3×64×64, and a copy with a
    seeded random permutation of every free space (31, 46 and 25 spaces; the largest weight
    change measured 0.67, 2.8 and 0.63, asserted > half of it): weight matching brings every
    tensor back exactly (max |Δ| 0.0)."""
    import torch
    from weightlab import plugins
    from weightlab.alignment import permute_model, random_permutation
    from weightlab.graph import trace
    from weightlab.matching.weight import weight_matching

    comp = plugins.registry().create("models", f"timm/{model}", {})
    torch.manual_seed(0)
    a = comp.build((3, 64, 64), 10).double().eval()
    g = trace(a, torch.randn(2, 3, 64, 64, dtype=torch.float64))
    b = permute_model(a, g, random_permutation(g, torch.Generator().manual_seed(1)))
    floats = {k: v for k, v in a.state_dict().items() if v.is_floating_point()}
    assert len(g.free_spaces()) == spaces
    assert max(float((b.state_dict()[k] - v).abs().max()) for k, v in floats.items()) > moved / 2
    back = permute_model(b, g, weight_matching(g, a.state_dict(), b.state_dict())).state_dict()
    assert max(float((back[k] - v).abs().max()) for k, v in floats.items()) == 0.0
