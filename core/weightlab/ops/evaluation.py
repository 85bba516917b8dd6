"""``evaluate``: loss, top-1 and top-5 of checkpoints on a split of their dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import EvaluationResult

SPLITS = ("test", "train", "heldout")


@operation("evaluate")
def evaluate(
    checkpoints: Annotated[list[Path], Opt("checkpoint files", input=True)],
    data: Annotated[str | None, Opt("dataset (default: the checkpoint's)")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    split: Annotated[str, Opt("test, train or heldout")] = "test",
    batch_size: Annotated[int, Opt("evaluation batch size", min=1)] = 1000,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
) -> EvaluationResult:
    """Loss, top-1 and top-5 of each checkpoint, with its sparsity."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import device as devmod
    from weightlab.data.bundle import load_data
    from weightlab.metrics import evaluate as run_eval

    if split not in SPLITS:
        raise UsageError(f"split={split!r}: expected test, train or heldout")
    dev = devmod.resolve(device)
    bundles: dict[str, Any] = {}
    rows = []
    for path in map(Path, checkpoints):
        net, ck = ckpt_io.load_model(path, dev)
        name = data or ck.data.get("name")
        if not name:
            raise UsageError(f"{path}: the checkpoint names no dataset; pass data=NAME")
        if name not in bundles:
            bundles[name] = load_data(name, data_dir=data_dir, device=dev,
                                      params=ck.data.get("params") if not data else None)
        m = run_eval(net, bundles[name].loader(split, batch_size=batch_size))
        sp = ckpt_io.sparsity_report(ck.masks) if ck.masks else None
        rows.append({"checkpoint": str(path), "data": name, "split": split, **m,
                     "sparsity": sp["overall"] if sp else 0.0,
                     "layer_sparsity": sp["layers"] if sp else {}})
    return EvaluationResult(rows)
