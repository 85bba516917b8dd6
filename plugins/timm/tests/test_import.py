"""``weightlab import`` of a timm state dict from a local .safetensors or .pth file: the
imported checkpoint computes the same logits; a file of another architecture is one line."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from weightlab import checkpoint as ckpt_io
from weightlab import plugins


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    net = plugins.registry().create("models", "timm/resnet10t").build((3, 32, 32), 10).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the defaults
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_import_round_trip_keeps_the_logits(tmp_path, cli, source, suffix):
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    src = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(src))
    else:
        torch.save(state, src)
    dest = tmp_path / "imported.safetensors"
    code, out, err = cli("import", src, "--model", "timm/resnet10t", "--out", dest)
    assert code == 0, err
    net, ck = ckpt_io.load_model(dest)
    assert ck.model["name"] == "timm/resnet10t" and ck.model["input_shape"] == [3, 32, 32]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x), source(x))


def test_a_key_mismatch_is_one_line(tmp_path, cli, source):
    src = tmp_path / "weights.pth"
    torch.save(source.state_dict(), src)
    code, out, err = cli("import", src, "--model", "timm/resnet14t",
                         "--out", tmp_path / "x.safetensors")
    assert code == 1 and err.count("\n") == 1
    assert "keys do not fit model timm/resnet14t" in err and "first missing" in err
