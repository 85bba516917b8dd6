"""The ``timm`` model family: timm's image classifiers by name, randomly initialised."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from weightlab.components import Model
from weightlab.models.init import INIT_HELP, parse_spec
from weightlab.params import param

from weightlab_timm import catalog

PREFIX = "timm/"


def check_arch(name: str) -> None:
    """An unknown timm name is one line with the closest known names."""
    known = catalog.names()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), 3, 0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint} "
                         f"({len(known)} models in timm {catalog.load()['timm']})")


def claimed_by_builtins(name: str) -> bool:
    """Whether a built-in family (torchvision's classifiers, the CIFAR models) answers to
    ``name``: those names stay theirs, timm's model is then only ``timm/<name>``."""
    from weightlab.models.families import MODELS

    return any(cls.params_from_name(name) is not None for cls in MODELS)


class TimmModel(Model):
    """A timm image classifier by name, built with ``timm.create_model(name,
    pretrained=False, num_classes=…, in_chans=C)``: no weights are downloaded. Bring trained
    weights (timm's own ``model.safetensors`` or ``pytorch_model.bin``) with ``weightlab import
    FILE --model timm/convnext_tiny --data imagenet``.

    Names: ``timm/<name>`` for every name of ``timm.list_models()``, and plain ``<name>`` when no
    built-in family claims it (``resnet18`` stays torchvision's, ``timm/resnet18`` is timm's;
    ``resnet18d`` is timm's either way).

    Input size: the model's pretrained configuration (``input_size``, e.g. 3×224×224) is its
    default input shape; a model timm builds for one input size (``fixed_input_size``: ViT,
    Swin, MaxViT, …) is built for the shape weightlab asks for (``img_size=(H, W)``), as timm
    does itself. ``img_size`` overrides the default shape. The pretrained configuration's
    ``mean``/``std`` belong to the dataset in weightlab; ``pretrained_cfg`` reports them.

    Example::

        m = plugins.registry().create("models", "timm/vit_tiny_patch16_224")
        m.default_input_shape                              # (3, 224, 224), timm's input_size
        net = m.build((3, 32, 32), num_classes=10)         # img_size=(32, 32): fixed-size
    """

    name = "timm"
    summary = "every timm image classifier by name: timm/<name> (timm/convnext_tiny, …)"
    examples = ("timm/convnext_tiny", "timm/resnet18", "resnet18d", "timm/vit_tiny_patch16_224",
                "mobilenetv3_small_100", "regnetx_002")

    @dataclass
    class Params:
        arch: str = param("resnet18", "timm model name (timm.list_models())", check=check_arch)
        img_size: int = param(0, "input height and width of the default input shape; 0: the "
                                 "pretrained configuration's", min=0)
        init: str = param("default", INIT_HELP, check=parse_spec)

    @classmethod
    def params_from_name(cls, name):
        if name == cls.name:
            return {}
        if name.startswith(PREFIX):
            return {"arch": name[len(PREFIX):]}  # an unknown name fails with close matches
        if name in catalog.names() and not claimed_by_builtins(name):
            return {"arch": name}
        return None

    @property
    def pretrained_cfg(self) -> dict:
        """timm's default pretrained configuration of this model: input_size, mean, std,
        fixed_input_size."""
        return catalog.pretrained_cfg(self.params.arch)

    @property
    def default_input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        c, h, w = self.pretrained_cfg["input_size"]
        size = self.params.img_size
        return (c, size, size) if size else (c, h, w)

    def build(self, input_shape, num_classes):
        import timm
        from weightlab.models.init import initialize

        kwargs = {"num_classes": num_classes, "in_chans": int(input_shape[0])}
        if self.pretrained_cfg["fixed_input_size"]:
            kwargs["img_size"] = tuple(int(s) for s in input_shape[1:])
        net = timm.create_model(self.params.arch, pretrained=False, **kwargs)
        return initialize(net, self.params.init)
