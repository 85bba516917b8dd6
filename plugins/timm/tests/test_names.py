"""Resolving names: timm/<name> always, plain <name> unless a built-in family claims it; the
catalogue snapshot matches the installed timm; listing and showing never import timm."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from weightlab import plugins
from weightlab.errors import WeightlabError
from weightlab_timm import catalog


@pytest.mark.parametrize("name, plugin", [
    ("timm/resnet18", "timm"), ("resnet18", "builtin"), ("timm/convnext_tiny", "timm"),
    ("convnext_tiny", "builtin"), ("resnet18d", "timm"), ("timm/resnet18d", "timm"),
    ("vit_tiny_patch16_224", "timm"), ("cifar_resnet20", "builtin"), ("vit_d4_w64_p7", "builtin"),
])
def test_names_resolve_to_their_family(name, plugin):
    assert plugins.registry().entry("models", name).plugin == plugin


def test_timm_name_carries_the_architecture_and_its_pretrained_input_shape():
    reg = plugins.registry()
    assert reg.create("models", "timm/resnet18").params.arch == "resnet18"
    assert reg.create("models", "resnet10t").default_input_shape == (3, 176, 176)
    assert reg.create("models", "timm/edgenext_xx_small").default_input_shape == (3, 256, 256)
    m = reg.create("models", "timm/convnext_atto", {"img_size": 64})
    assert m.default_input_shape == (3, 64, 64)
    cfg = reg.create("models", "timm/vit_tiny_patch16_224").pretrained_cfg
    assert cfg["fixed_input_size"] and cfg["mean"] == (0.5, 0.5, 0.5)
    assert reg.create("models", "timm/resnet18").pretrained_cfg["mean"] == (0.485, 0.456, 0.406)


def test_an_unknown_timm_name_is_one_line_with_close_matches(cli):
    code, out, err = cli("show", "models", "timm/convnxt_atto")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "did you mean 'convnext_atto'" in err
    with pytest.raises(WeightlabError, match="unknown model 'convnxt_atto'"):
        plugins.registry().entry("models", "convnxt_atto")  # plain names: only known ones


def test_show_reports_the_timm_parameters(cli):
    data = cli.json("show", "models", "timm/convnext_tiny")
    assert data["plugin"] == "timm"
    values = {p["name"]: p["value"] for p in data["parameters"]}
    assert values == {"arch": "convnext_tiny", "img_size": 0, "init": "default"}


def test_the_catalogue_matches_the_installed_timm():
    assert catalog.snapshot() == catalog.load(), \
        "models.json is stale: python -m weightlab_timm.catalog"


_RUN = """
import io, contextlib, json, sys
from weightlab_cli.main import main
codes = []
for argv in (["list", "models"], ["show", "models", "timm/convnext_tiny"],
             ["show", "models", "resnet18d"]):
    with contextlib.redirect_stdout(io.StringIO()):
        codes.append(main(argv))
print(json.dumps([codes, [m for m in ("timm", "torch") if m in sys.modules]]))
"""


def test_listing_and_showing_import_neither_timm_nor_torch():
    res = subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.splitlines()[-1]) == [[0, 0, 0], []]
