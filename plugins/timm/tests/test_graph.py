"""``weightlab graph timm/<name> --check`` for the smallest model of each timm family. The
passing ones are traced exactly: a random permutation of every free channel space leaves the
logits unchanged. The others stop at the first operation the traced graph does not support,
in one line (the table in plugins/timm/README.md lists them)."""

from __future__ import annotations

import pytest

SMALL = ("--input-shape", "3,64,64")

# family → a small model of it, checked at 3×64×64 (none of these is fixed-size)
PASSING = {
    "resnet": "resnet10t", "seresnet": "seresnet18", "resnetv2": "resnetv2_18",
    "efficientnet": "efficientnet_b0", "efficientnetv2": "efficientnetv2_rw_t",
    "tinynet": "tinynet_e", "mnasnet": "mnasnet_small", "regnetx": "regnetx_002",
    "regnety": "regnety_002", "fastvit": "fastvit_t8", "repvgg": "repvgg_a0",
    "mobileone": "mobileone_s0", "densenet": "densenet121", "vovnet": "vovnet39a",
    "selecsls": "selecsls42", "dla": "dla34", "convmixer": "convmixer_768_32",
}


@pytest.mark.parametrize("model", list(PASSING.values()), ids=list(PASSING))
def test_graph_check_is_invariant(cli, model):
    res = cli.json("graph", f"timm/{model}", "--check", *SMALL)
    assert res["free_spaces"] > 0
    check = res["check"]
    # default tolerance 1e-4 relative: efficientnetv2_rw_t's random-init logits reach 1e5
    assert check["invariant"] and check["permuted_spaces"] > 0, check


def test_an_unsupported_family_is_one_error_line(cli):
    code, out, err = cli("graph", "timm/convnext_atto", "--check", *SMALL)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ConvNeXt: ") and "weightlab_feature_spec" in err


def test_the_documented_table_lists_the_passing_families():
    from weightlab import testing

    readme = (testing.REPO / "plugins" / "timm" / "README.md").read_text()
    page = (testing.REPO / "docs" / "plugins" / "timm.md").read_text()
    table = readme[readme.index("| family |"):]
    assert table in page, "docs/plugins/timm.md and plugins/timm/README.md tables differ"
    for family, model in PASSING.items():
        assert f"| {family} | `{model}` | 3×64×64 | passes |" in table, family
    assert "| convnext | `convnext_atto` | 3×64×64 | `ConvNeXt: mul" in table
