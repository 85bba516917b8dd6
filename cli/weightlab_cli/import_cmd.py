"""``weightlab import FILE --model NAME``: plain torch state dicts → weightlab checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from weightlab_cli.common import FORCE_OPT, PARAM_OPT, info


def import_checkpoint(
    file: Path = typer.Argument(..., help="a torch file holding a state dict"),
    model: str = typer.Option(..., "--model", help="model name, e.g. cifar_resnet20"),
    data: str = typer.Option("cifar10", "--data", help="dataset the model was trained on"),
    num_classes: int = typer.Option(None, "--num-classes", help="default: the dataset's"),
    out: Path = typer.Option(None, "--out", "-o", help="output (default FILE.safetensors)"),
    model_param: list[str] = PARAM_OPT,
    data_param: list[str] = typer.Option(None, "--data-param", help="dataset parameter "
                                         "key=value (normalization=cifar10: the seed's "
                                         "CIFAR-100 models)"),
    force: bool = FORCE_OPT,
):
    """Convert a plain torch state dict (loaded with weights_only=True; the Vanishing Feature
    code's model_1_160.pt files included) into a safetensors checkpoint."""
    from weightlab.ops import import_checkpoint as run

    res = run(file, model, data=data, num_classes=num_classes, out=out,
              model_param=model_param, data_param=data_param, force=force)
    info(f"wrote {res['out']}")
