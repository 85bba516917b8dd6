"""A pruning sweep as independent steps: one step per sparsity, each loading the checkpoint and
data itself, so an executor (local worker processes, Ray, SLURM) runs them side by side.

In process, :func:`weightlab.pruning.sweep` computes the pruner's sparsity-independent
analysis (WoodFisher's Fisher inverse, diag_fisher's scores) once and shares it; here every
step computes it again on the same dense state, so the results are identical but that work is
repeated — worth it when the steps run on separate devices or nodes, not for a cheap pruner on
one CPU. Each step writes ``OUT/sparsity-S.safetensors`` and returns :func:`one_shot`'s record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STEP_DIR = "steps"


def prune_step(checkpoint: str, pruner: str, sparsity: float, out: str, *,
               pruner_params: dict | None = None, normalizer: str | None = None,
               normalizer_params: dict | None = None, data: str | None = None,
               data_dir: str | None = None, calibration_samples: int = 2000,
               batch_size: int = 500, device: str = "cpu") -> dict[str, Any]:
    """:func:`weightlab.prune` of ``checkpoint`` to one ``sparsity`` (then ``normalizer``, the
    dense model as reference), saved at ``out``; the one-shot record (JSON values) with the
    written tensors' digest."""
    from weightlab.ops import prune

    res = prune(checkpoint, pruner, sparsity=sparsity, pruner_param=pruner_params,
                normalizer=normalizer, normalizer_param=normalizer_params, data=data,
                data_dir=data_dir, calibration_samples=calibration_samples,
                batch_size=batch_size, out=Path(out), device=device, force=True)
    rec = dict(res.to_json())
    rec["sha256"] = res.checkpoint.digest()
    return json.loads(json.dumps(rec, default=str))  # pruner reports may hold tensors


def sweep_specs(checkpoint: str | Path, pruner: str, sparsities: Sequence[float],
                out_dir: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """One step spec per sparsity (records under ``OUT/steps/``); ``kwargs`` as for
    :func:`prune_step`. ``device`` is filled by executors that assign devices."""
    out_dir = Path(out_dir).resolve()
    specs = []
    for s in sparsities:
        tag = f"sparsity-{s:g}"
        specs.append({"id": tag, "call": "weightlab.pruning_fanout:prune_step",
                      "kwargs": {"checkpoint": str(Path(checkpoint).resolve()),
                                 "pruner": pruner, "sparsity": float(s),
                                 "out": str(out_dir / f"{tag}.safetensors"), **kwargs},
                      "out": f"{STEP_DIR}/{tag}.json", "device_kwarg": "device"})
    return specs


def sweep(checkpoint: str | Path, pruner: str, sparsities: Sequence[float],
          out_dir: str | Path, executor: Any = None, *, retries: int = 1, log=None,
          **kwargs: Any) -> list[dict[str, Any]]:
    """The sweep through ``executor`` (default: in this process, one step after another);
    the records in the order of ``sparsities``. A rerun redoes only unfinished sparsities."""
    from weightlab.executors import run_graph

    specs = sweep_specs(checkpoint, pruner, sparsities, out_dir, **kwargs)
    done = run_graph(specs, {}, executor, out_dir, retries=retries, log=log)
    return [done[s["id"]]["result"] for s in specs]
