"""REPAIR's placement: ``all`` (every conv/linear at the norm's output) or ``seed`` (the
Vanishing Feature code's ``make_repaired_net``: a CIFAR ResNet's block conv1/conv2 only, VGG's
every conv, each before its norm): exact properties, and both measured on trained ResNet-8s."""

import pytest
import torch
from weightlab import testing
from weightlab.errors import UsageError
from weightlab_repair.places import find_places, select_places
from weightlab_repair.repair import Repair, Rescale, Reshift


@pytest.fixture(scope="module")
def digits():
    return testing.tiny_data("digits")


def test_seed_placement_picks_the_block_convs_of_a_resnet():
    """ResNet-8 has 1 stem conv, 3 blocks × 2 convs, 2 projection shortcuts and the head: the
    seed corrects exactly the 6 block convs (listed by hand from the model's layout)."""
    net = testing.tiny_model("cifar_resnet8", input_shape=(1, 8, 8), seed=0).eval()
    places = find_places(net, torch.randn(2, 1, 8, 8))
    seed = select_places(places, "seed")
    assert [p.name for p in seed] == ["layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1",
                                      "layer2.0.conv2", "layer3.0.conv1", "layer3.0.conv2"]
    assert all(p.pre_norm and p.point is p.layer for p in seed)
    everything = [p.name for p in select_places(places, "all")]
    assert "conv1" in everything and "layer2.0.shortcut.0" in everything
    with pytest.raises(UsageError, match="placement='nowhere'"):
        select_places(places, "nowhere")


@pytest.mark.parametrize("name", ["cifar_resnet8", "plain_cifar_resnet8", "mlp"])
@pytest.mark.parametrize("cls", [Repair, Rescale, Reshift])
def test_seed_placement_towards_itself_is_identity(digits, name, cls):
    """A model repaired towards itself at the seed's places is unchanged (float64): for the BN
    ResNet the pre-norm correction folds exactly into γ and the running mean; the plain ResNet
    folds into its block convs' biases. (The MLP has no conv: seed placement is an error.)"""
    net = testing.tiny_model(name, input_shape=(1, 8, 8), seed=1).double().eval()
    testing.randomize_norms(net, 2)
    calib = digits.loader("calibration", batch_size=512, num_samples=512)
    x = next(iter(digits.loader("test", batch_size=256)))[0].double()
    norm = cls(placement="seed")
    if name == "mlp":
        with pytest.raises(UsageError, match="no conv layer"):
            norm.apply(net, [net], [1.0], calib)
        return
    out = norm.apply(net, [net], [1.0], calib)
    with torch.no_grad():
        before, after = net(x), out(x)
    assert (after - before).abs().max() <= 1e-10 * before.abs().max()


def test_seed_placement_folds_a_real_correction_exactly(digits):
    """Repair a ResNet-8 (BN) towards a different model at the seed's places, then check the
    folded model against the same correction applied as an explicit affine map on each block
    conv's output (z' = a·z + c with the a, c the folded model implies): max relative |Δ| of the
    logits ≤ 1e-9 in float64."""
    a = testing.tiny_model("cifar_resnet8", input_shape=(1, 8, 8), seed=1).double().eval()
    b = testing.tiny_model("cifar_resnet8", input_shape=(1, 8, 8), seed=2).double().eval()
    testing.randomize_norms(a, 3)
    testing.randomize_norms(b, 4)
    calib = digits.loader("calibration", batch_size=512, num_samples=512)
    x = next(iter(digits.loader("test", batch_size=64)))[0].double()
    out = Repair(placement="seed").apply(a, [b], [1.0], calib)
    # unfolded: the original a with an affine map after each block conv that reproduces out's BN
    handles = []
    for name, conv in a.named_modules():
        if name.startswith("layer") and name.rsplit(".", 1)[-1] in ("conv1", "conv2"):
            bn_a = a.get_submodule(name.replace("conv", "bn"))
            bn_o = out.get_submodule(name.replace("conv", "bn"))
            scale = bn_o.weight.double() / bn_a.weight.double()  # γ' = γ·a
            shift = bn_a.running_mean.double() - scale * bn_o.running_mean.double()  # μ' = (μ−c)/a
            handles.append(conv.register_forward_hook(
                lambda m, i, z, s=scale, c=shift: z * s.view(1, -1, 1, 1) + c.view(1, -1, 1, 1)))
    with torch.no_grad():
        want = a(x)
    for h in handles:
        h.remove()
    with torch.no_grad():
        got = out(x)
        assert (got - want).abs().max() <= 1e-9 * want.abs().max()
        assert (got - a(x)).abs().max() > 1e-3 * want.abs().max()  # it did change the model


@pytest.mark.parametrize(("model", "train"), [
    ("cifar_resnet8", {"epochs": 3, "train": {"lr": 0.05, "batch_size": 64}}),
    ("plain_cifar_resnet8", {"epochs": 10, "train": {"lr": 0.01, "batch_size": 32}})])
def test_both_placements_repair_the_same_merged_model(model, train):
    """Weight-matched midpoint of two ResNet-8s on digits, repaired at weightlab's places
    (all) and at the seed's (block convs, before the norm). Measured (360 test images):
    BatchNorm ResNet-8 (endpoints 98.3% / 98.6%): none 33.1%, all 77.5%, seed 73.9%; plain
    ResNet-8 without shortcut biases (89.4% / 88.3%): none 48.6%, all 72.8%, seed 72.2%."""
    import weightlab

    paths = testing.trained(model, "digits", **train)
    top1 = {}
    for placement in (None, "all", "seed"):
        res = weightlab.merge(paths, matcher="weight",
                              normalizer="repair" if placement else None,
                              normalizer_param={"placement": placement} if placement else None)
        top1[placement] = res["evaluation"][-1]["top1"]
    assert top1["all"] > top1[None] + 0.15 and top1["seed"] > top1[None] + 0.15


def test_repair_of_a_convnext_towards_itself_is_identity():
    """ConvNeXt-T (LayerNorm, channels-last pointwise linears, no BatchNorm): REPAIR with one
    reference equal to the target corrects every conv/linear output (the linears' outputs
    channels-last) and leaves the function unchanged (float64, one calibration batch of 32
    images at 32×32: measured max relative |Δ logits| 0.0)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.convnext_tiny(weights=None, num_classes=10).double().eval()
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(32, 3, 32, 32, generator=gen, dtype=torch.float64),
             torch.zeros(32, dtype=torch.long))]
    out = Repair(samples=32).apply(net, [net], [1.0], data)
    x = torch.randn(8, 3, 32, 32, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        before, after = net(x), out(x)
    assert (after - before).abs().max() <= 1e-9 * before.abs().max()
