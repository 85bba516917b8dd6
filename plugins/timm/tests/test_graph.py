"""``weightlab graph timm/<name> --check`` for the smallest model of each timm family. The
passing ones are traced exactly: a random permutation of every free channel space leaves the
logits unchanged. The others stop at the first operation the traced graph does not support,
in one line (the table in plugins/timm/README.md lists them)."""

from __future__ import annotations

import pytest

SMALL = ("--input-shape", "3,64,64")

# family → the smallest model, checked at 3×64×64 (none of these is fixed-size)
PASSING = {
    "resnet": "resnet10t", "resnetv2": "resnetv2_18", "efficientnet": "efficientnet_b0",
    "regnet": "regnetx_002", "fastvit": "fastvit_t8",
}


@pytest.mark.parametrize("model", list(PASSING.values()), ids=list(PASSING))
def test_graph_check_is_invariant(cli, model):
    res = cli.json("graph", f"timm/{model}", "--check", *SMALL)
    assert res["free_spaces"] > 0
    check = res["check"]
    assert check["invariant"] and check["permuted_spaces"] > 0, check
    assert check["relative"] < 1e-6


def test_an_unsupported_family_is_one_error_line(cli):
    code, out, err = cli("graph", "timm/convnext_atto", "--check", *SMALL)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ConvNeXt: ") and "weightlab_feature_spec" in err
