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
    """Prune ``checkpoint`` to ``sparsity`` (then ``normalizer``, the dense model as reference),
    save the sparse checkpoint at ``out``; the one-shot record (JSON values)."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import plugins, pruning
    from weightlab.data.bundle import load_data

    reg = plugins.registry()
    comp = reg.create("pruners", pruner, pruner_params or {})
    norm = reg.create("normalizers", normalizer, normalizer_params or {}) if normalizer else None
    dense, ck = ckpt_io.load_model(checkpoint, device)
    name = data or ck.data.get("name")
    loaders: dict[str, Any] = {}
    if name:
        bundle = load_data(name, data_dir=data_dir, device=device,
                           params=ck.data.get("params") if not data else None)
        wanted = max(calibration_samples, getattr(comp.params, "samples", 0))
        loaders = {"evaluate_on": bundle.loader("test", batch_size=batch_size),
                   "calibration": bundle.loader("calibration", num_samples=calibration_samples,
                                                batch_size=500),
                   "pruner_data": bundle.loader("calibration", num_samples=wanted,
                                                batch_size=500) if comp.needs_data else None}
    analysis, analyze_s = pruning.analyze(dense, comp, ck.masks, loaders.get("pruner_data"))
    model, masks, rec = pruning.one_shot(dense, comp, sparsity, masks=ck.masks, normalizer=norm,
                                         analysis=analysis, **loaders)
    if analysis is not None:
        rec["seconds"]["analyze"] = analyze_s
    final = rec.get("normalized") or rec.get("pruned")
    metrics = {"test": final, "prune": {k: rec.get(k) for k in ("dense", "pruned",
                                                                "normalized")}} if final else {}
    provenance = {"command": "prune", "source": str(checkpoint), "pruner": comp.name,
                  "params": comp.params_dict(), "normalizer": norm.name if norm else None,
                  "calibration_samples": calibration_samples, "data": name,
                  "sparsity": sparsity, "parent": ck.provenance}
    new = ckpt_io.from_model(model, ck.model, masks=masks, data=ck.data, train=ck.train,
                             metrics=metrics, provenance=provenance)
    ckpt_io.save(new, out, force=True)
    rec["checkpoint"] = str(out)
    rec["sha256"] = ckpt_io.read_header(out)["sha256"]
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
