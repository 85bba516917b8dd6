"""Operations on checkpoints themselves: load, save, import a foreign state dict, count
parameters and FLOPs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import FlopsResult, Result


def load(path: str | Path, device: str | None = None):
    """``(model, checkpoint)``: the model rebuilt from a weightlab checkpoint (in eval mode,
    masks applied) on ``device`` (default: cuda when present), and its header and tensors."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import device as devmod

    return ckpt_io.load_model(Path(path), devmod.resolve(device))


def save(model: Any, path: str | Path, *, like: Any = None, model_info: dict | None = None,
         force: bool = False, **fields: Any):
    """Write ``model`` as a checkpoint: its architecture from ``like`` (a checkpoint it came
    from) or ``model_info`` (name, params, input_shape, num_classes); ``fields`` fill the
    header (data, train, metrics, provenance, masks). Atomic; refuses to overwrite without
    ``force``. Returns the Checkpoint."""
    from weightlab import checkpoint as ckpt_io

    if like is None and model_info is None:
        raise UsageError("save: pass like=CHECKPOINT or model_info={name, params, "
                         "input_shape, num_classes}")
    info = model_info or like.model
    if like is not None:
        for key in ("data", "train"):
            fields.setdefault(key, getattr(like, key))
    ck = ckpt_io.from_model(model, info, **fields)
    ckpt_io.save(ck, path, force=force)
    return ck


@operation("import", out="file")
def import_checkpoint(
    file: Annotated[Path, Opt("a torch file holding a state dict", input=True)],
    model: Annotated[str, Opt("model name, e.g. cifar_resnet20")],
    data: Annotated[str, Opt("dataset the model was trained on")] = "cifar10",
    num_classes: Annotated[int | None, Opt("default: the dataset's", min=1)] = None,
    out: Annotated[Path | None, Opt("output (default FILE.safetensors)")] = None,
    model_param: Annotated[dict | None, Opt("model parameters", aliases=("param",))] = None,
    data_param: Annotated[dict | None, Opt("dataset parameters (e.g. normalization=cifar10 "
                                           "for the seed's CIFAR-100 models)")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
) -> Result:
    """Convert a plain torch state dict (loaded with weights_only=True; the Vanishing Feature
    code's model_1_160.pt files included) into a safetensors checkpoint."""
    from weightlab.importer import import_state_dict
    from weightlab.ops.common import param_dict

    dest = Path(out) if out else Path(file).with_suffix(".safetensors")
    import_state_dict(Path(file), model, data, dest, num_classes=num_classes,
                      model_params=param_dict(model_param),
                      data_params=param_dict(data_param), force=force)
    return Result({"out": str(dest), "model": model, "data": data})


@operation("flops")
def flops(
    target: Annotated[str, Opt("a checkpoint file or a model name")],
    input_shape: Annotated[list[int] | str | None,
                           Opt("C,H,W (default: the checkpoint's, else the model's)")] = None,
    num_classes: Annotated[int, Opt("classes of a model built by name", min=1)] = 10,
) -> FlopsResult:
    """Parameters and FLOPs per layer and in total, dense and non-zero (sparse models)."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import plugins
    from weightlab.flopcount import count

    masks = None
    if Path(str(target)).suffix == ".safetensors" or Path(str(target)).is_file():
        net, ck = ckpt_io.load_model(Path(target))
        shape = list(ck.model["input_shape"])
        masks = ck.masks
    else:
        comp = plugins.registry().create("models", str(target))
        shape = list(comp.default_input_shape)
        net = comp.build(shape, num_classes)
    if input_shape:
        shape = _shape(input_shape)
    return FlopsResult(count(net, shape, masks))


@operation("graph")
def graph_info(
    target: Annotated[str, Opt("a checkpoint file or a model name")],
    check: Annotated[bool, Opt("apply a seeded random permutation to every free space and "
                               "compare the outputs")] = False,
    input_shape: Annotated[list[int] | str | None,
                           Opt("C,H,W (default: the checkpoint's, else the model's)")] = None,
    num_classes: Annotated[int, Opt("classes of a model built by name", min=1)] = 10,
    seed: Annotated[int, Opt("seed of the check's permutation")] = 0,
    tolerance: Annotated[float, Opt("largest relative output change that counts as "
                                    "invariant", min=0.0)] = 1e-4,
) -> Result:
    """The model's channel spaces as weightlab traces them (size, free or fixed, producing
    layers, norms, tensor axes) and, with ``check``, whether permuting every free space leaves
    its outputs unchanged: the first thing to run on one's own model."""
    import torch

    from weightlab import checkpoint as ckpt_io
    from weightlab import plugins
    from weightlab.graph import trace
    from weightlab.graph.check import describe, permutation_check

    if Path(str(target)).suffix == ".safetensors" or Path(str(target)).is_file():
        net, ck = ckpt_io.load_model(Path(target))
        shape = list(ck.model["input_shape"])
    else:
        comp = plugins.registry().create("models", str(target))
        shape = list(comp.default_input_shape)
        torch.manual_seed(seed)
        net = comp.build(shape, num_classes)
    if input_shape:
        shape = _shape(input_shape)
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    g = trace(net.eval(), example)
    spaces = describe(g)
    out = {"target": str(target), "input_shape": shape, "spaces": spaces,
           "free_spaces": sum(s["free"] for s in spaces), "layers": len(g.layers)}
    if check:
        out["check"] = permutation_check(net, g, example, seed=seed, tolerance=tolerance)
    return Result(out)


def _shape(value: Any) -> list[int]:
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = str(value).split(",")
    try:
        shape = [int(v) for v in items]
    except (TypeError, ValueError):
        shape = []
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"input_shape={value!r}: expected three positive integers C,H,W")
    return shape
