"""Building timm models by name: the architecture timm builds, for the classes and input
channels asked for; fixed-size models (ViT) for the input size asked for."""

from __future__ import annotations

import pytest
import torch
from weightlab import plugins


@pytest.mark.parametrize("name, shape", [
    ("timm/resnet18", (3, 64, 64)), ("resnet18d", (1, 28, 28)),
    ("timm/convnext_atto", (3, 32, 32)), ("mobilenetv3_small_050", (3, 64, 64)),
    ("regnetx_002", (3, 32, 32)), ("vit_tiny_patch16_224", (3, 32, 32)),
    ("timm/swin_tiny_patch4_window7_224", (3, 64, 64)),
])
def test_build_by_name_gives_timm_architecture_for_the_shape_and_classes(name, shape):
    import timm

    torch.manual_seed(0)
    comp = plugins.registry().create("models", name)
    net = comp.build(shape, 7).eval()
    assert type(net).__module__.startswith("timm.models")
    kwargs = {"img_size": shape[1:]} if comp.pretrained_cfg["fixed_input_size"] else {}
    ref = timm.create_model(comp.params.arch, num_classes=7, in_chans=shape[0], **kwargs)
    assert net.state_dict().keys() == ref.state_dict().keys()
    assert [p.shape for p in net.parameters()] == [p.shape for p in ref.parameters()]
    with torch.no_grad():
        assert net(torch.randn(2, *shape)).shape == (2, 7)


def test_build_is_random_init_and_seeded():
    comp = plugins.registry().create("models", "timm/resnet10t")
    torch.manual_seed(1)
    a = comp.build((3, 32, 32), 10).state_dict()
    torch.manual_seed(1)
    b = comp.build((3, 32, 32), 10).state_dict()
    torch.manual_seed(2)
    c = comp.build((3, 32, 32), 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])
