"""Every seed model name imports: a state dict saved as the seed saves it
(``torch.save(model.state_dict(), 'model_1_160.pt')``) from the re-stated seed model imports
with ``weightlab import``, has the seed's parameter count, and computes the same logits.

Measured (2026-12-04, CPU, float32, random weights and randomized norm statistics, 8 CIFAR-size
inputs): VGG max |Δ| = 0.0; ResNets 2.0e-7 … 4.1e-7 relative to the largest logit (the
ResNets' global pool is a mean here, an avg_pool2d there). Tolerance 1e-5."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from weightlab import checkpoint as ckpt_io
from weightlab.errors import CheckpointError
from weightlab.importer import import_state_dict

from .seed_models import seed_model

# every model name the seed's training scripts and notebooks use (source/utils/utils.py)
SEED_NAMES = ["cifar_vgg11", "cifar_vgg16", "cifar_vgg16_bn", "cifar_vgg16_ln",
              "cifar_vgg16_nobias", "cifar_vgg16_bn_2x", "cifar_resnet20", "cifar_resnet20_ln",
              "cifar_resnet20_4x", "cifar_resnet20_ln_4x", "cifar_resnet32",
              "plain_cifar_resnet20", "plain_cifar_resnet20_nobias", "fixup_cifar_resnet20"]

# the seed's own parameter counts (counted from its definitions, CIFAR-10 heads)
SEED_PARAMS = {"cifar_resnet20": 272_474, "plain_cifar_resnet20": 271_594,
               "fixup_cifar_resnet20": 270_953}


def _randomize(net: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # Fixup's zero-initialized convs and head become non-zero
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (p == 1) * 1.0)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


CASES = [(n, 10) for n in SEED_NAMES] + [(n, 100) for n in ("cifar_resnet20",
                                                              "cifar_resnet20_ln",
                                                              "cifar_vgg16_bn")]


@pytest.mark.parametrize(("name", "classes"), CASES)
def test_a_seed_checkpoint_imports_and_computes_the_same(tmp_path, name, classes):
    torch.manual_seed(0)
    seed_net = seed_model(name, classes).eval()
    _randomize(seed_net, 1)
    src = tmp_path / "model_1_160.pt"
    torch.save(seed_net.state_dict(), src)
    data = "cifar10" if classes == 10 else "cifar100"
    ck = import_state_dict(src, name, data, tmp_path / "m.safetensors")
    net, back = ckpt_io.load_model(tmp_path / "m.safetensors")
    net.eval()
    n_seed = sum(p.numel() for p in seed_net.parameters())
    assert sum(p.numel() for p in net.parameters()) == n_seed
    if classes == 10 and name in SEED_PARAMS:
        assert n_seed == SEED_PARAMS[name]
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = seed_net(x), net(x)
    rel = ((got - want).abs().max() / want.abs().max()).item()
    print(f"{name} ({classes} classes): max relative |Δ logits| = {rel:.1e}")
    assert rel <= 1e-5
    expect_layout = None if name.startswith("cifar_vgg") else "vf"
    assert back.provenance.get("layout") == expect_layout == ck.provenance.get("layout")


def test_a_wrong_model_name_is_one_line_with_the_closest_key(tmp_path, cli):
    """A seed ResNet-20 file imported as a ResNet-32: keys of the extra blocks are missing; the
    error is one line (under 300 characters, not a 2.7 kB list) naming the first missing key
    and the file's closest key."""
    src = tmp_path / "model_1_160.pt"
    torch.save(seed_model("cifar_resnet20").state_dict(), src)
    with pytest.raises(CheckpointError) as e:
        import_state_dict(src, "cifar_resnet32", "cifar10", tmp_path / "x.safetensors")
    msg = str(e.value)
    assert "first missing: 'layer1.3.conv1.weight'" in msg and "closest key is" in msg
    assert "read with the 'vf' layout" in msg and len(msg) < 300
    code, _, err = cli("import", src, "--model", "cifar_resnet32", "--data", "cifar10",
                       "--out", tmp_path / "x.safetensors")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "first missing" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_unexpected_keys_are_named_too(tmp_path):
    """A plain ResNet saved with biases on its shortcut convs (weightlab's old layout) imported
    as the seed's plain ResNet: nothing missing, two unexpected keys, the first one named."""
    from weightlab import plugins

    net = plugins.registry().create("models", "plain_cifar_resnet20",
                                    {"shortcut_bias": True}).build((3, 32, 32), 10)
    src = tmp_path / "old.pt"
    torch.save(net.state_dict(), src)
    with pytest.raises(CheckpointError, match=r"0 model key\(s\) missing from the file, 2 "
                                              r"unexpected; first unexpected: "
                                              r"'layer2.0.shortcut.0.bias'"):
        import_state_dict(src, "plain_cifar_resnet20", "cifar10", tmp_path / "x.safetensors")
    ck = import_state_dict(src, "plain_cifar_resnet20", "cifar10", tmp_path / "y.safetensors",
                           model_params={"shortcut_bias": True})
    assert ck.model["params"]["shortcut_bias"] is True
