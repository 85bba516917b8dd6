"""Step callables: any operation by name, and two conveniences for graphs built by hand (the
executor tests and benchmark). Each takes JSON values and returns JSON; they call the
operations layer, so a step computes exactly what the CLI and recipes compute. Paths in kwargs
should be absolute (a remote worker's working directory is not the caller's)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any


def operation(op: str, options: dict[str, Any] | None = None, device: str | None = None
              ) -> Any:
    """``weightlab.operation(op)(**options)`` and its ``to_json()``; ``device`` (what the
    executor assigned) goes to the operation's ``device`` option when it has one."""
    from weightlab.ops.registry import get

    operation_ = get(op)
    kwargs = dict(options or {})
    if device is not None and "device" in inspect.signature(operation_.func).parameters:
        kwargs.setdefault("device", device)
    return operation_(**kwargs).to_json()


def train(model: str, data: str, out_dir: str, *, model_params: dict | None = None,
          epochs: int = 1, seed: int = 0, lr: float = 0.1, batch_size: int = 128,
          data_dir: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train one ``model`` on ``data`` into ``out_dir`` (resumes there after an interruption;
    :func:`weightlab.train`); the checkpoint, its tensor digest and its final test metrics."""
    from weightlab.ops import train as run

    res = run(model, data=data, out=Path(out_dir), epochs=epochs, seed=seed, lr=lr,
              batch_size=batch_size, model_param=model_params or {}, data_dir=data_dir,
              train_param={"eval_every": 0}, device=device, resume=True, force=True)
    ck = res.checkpoints[0]
    return {"checkpoint": str(ck.path), "sha256": ck.digest(),
            "test": ck.metrics.get("test")}


def evaluate_average(checkpoints: list[str], data: str, *, data_dir: str | None = None,
                     device: str = "cpu") -> dict[str, Any]:
    """Test metrics of each checkpoint and of their uniform weight average (naive merging,
    θ = Σ θ_i / N, no alignment: :func:`weightlab.merge` with the identity matcher)."""
    from weightlab.ops import evaluate, merge

    if len(checkpoints) == 1:  # the average of one model is that model
        (row,) = evaluate(checkpoints, data=data, data_dir=data_dir, device=device).to_json()
        keep = ("loss", "top1", "top5", "samples")
        metrics = {k: row[k] for k in keep if k in row}
        return {"models": [metrics], "average": metrics}
    rows = merge(checkpoints, matcher="identity", data=data, data_dir=data_dir,
                 device=device)["evaluation"]
    plain = [{k: v for k, v in r.items() if k != "model"} for r in rows]
    return {"models": plain[:-1], "average": plain[-1]}
