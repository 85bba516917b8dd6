"""``weightlab graph timm/<name> --check`` for the smallest model of each timm family. The
passing ones are traced exactly: a random permutation of every free channel space leaves the
logits unchanged. The others stop at the first operation the traced graph does not support,
in one line (the table in plugins/timm/README.md lists them)."""

from __future__ import annotations

import pytest

# family → a small model of it and the input it is checked at: 3×64×64, or its own size when
# timm builds it for one (weightlab graph builds a model by name at its default input shape)
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
}


def _shape(size: int) -> tuple[str, ...]:
    return ("--input-shape", f"3,{size},{size}")


@pytest.mark.parametrize("model, size", list(PASSING.values()), ids=list(PASSING))
def test_graph_check_is_invariant(cli, model, size):
    res = cli.json("graph", f"timm/{model}", "--check", *_shape(size))
    assert res["input_shape"] == [3, size, size] and res["free_spaces"] > 0
    check = res["check"]
    # default tolerance 1e-4 relative: efficientnetv2_rw_t's random-init logits reach 1e5
    assert check["invariant"] and check["permuted_spaces"] > 0, check


def test_an_unsupported_family_is_one_error_line(cli):
    code, out, err = cli("graph", "timm/edgenext_xx_small", "--check", *_shape(64))
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: EdgeNeXt: ") and "weightlab_feature_spec" in err


def test_the_documented_table_lists_the_passing_families():
    from weightlab import testing

    readme = (testing.REPO / "plugins" / "timm" / "README.md").read_text()
    page = (testing.REPO / "docs" / "plugins" / "timm.md").read_text()
    table = readme[readme.index("| family |"):]
    assert table in page, "docs/plugins/timm.md and plugins/timm/README.md tables differ"
    for family, (model, size) in PASSING.items():
        assert f"| {family} | `{model}` | 3×{size}×{size} | passes |" in table, family
    assert "| edgenext | `edgenext_xx_small` | 3×64×64 | `EdgeNeXt: add_7" in table
