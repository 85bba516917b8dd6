"""A preserve-first merging sweep as independent steps: one step per k, each the ``pfm``
operation with ``k=k`` loading both checkpoints and the data itself, so an executor (local
worker processes, Ray, SLURM) runs them side by side.

In process, the sweep computes the alignment (one calibration pass of a data-driven matcher
such as ZipIt!) once and shares it between all k; here every step computes it again from the
same checkpoints and calibration images. The matchers are deterministic, so the results are
identical, but that work is repeated L times — worth it when the steps run on separate GPUs
or nodes, not for a cheap matcher on one CPU. The references (model A, model B, their
ensemble) are computed once, by the k = 0 step. Each step returns the operation's JSON result
(one row); records are written under ``DIR/steps/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STEP_DIR = "steps"


def pfm_step(model_a: str, model_b: str, k: int, *, references: bool = True,
             matcher: str | None = "zipit", matcher_params: dict | None = None,
             normalizer: str | None = None, normalizer_params: dict | None = None,
             data: str | None = None, data_dir: str | None = None,
             calibration_samples: int = 4096, device: str | None = None) -> dict[str, Any]:
    """:func:`weightlab_zipit.ops.pfm` at one ``k`` (alignment computed here); its JSON result,
    without the references unless ``references``."""
    from weightlab_zipit.ops import pfm

    res = pfm(model_a, model_b, matcher=matcher, matcher_param=matcher_params,
              normalizer=normalizer, normalizer_param=normalizer_params, k=k, data=data,
              data_dir=Path(data_dir) if data_dir else None,
              calibration_samples=calibration_samples, device=device,
              _references=references).to_json()
    return json.loads(json.dumps(res, default=str))


def sweep_specs(models: Sequence[str | Path], ks: Sequence[int], **kwargs: Any
                ) -> list[dict[str, Any]]:
    """One step spec per k (records ``steps/k-K.json`` in the run directory); the first k
    computes the references. ``kwargs`` as for :func:`pfm_step`; ``device`` is filled by
    executors that assign devices."""
    a, b = (str(Path(p).resolve()) for p in models)
    return [{"id": f"k-{k}", "call": "weightlab_zipit.pfm_fanout:pfm_step",
             "kwargs": {"model_a": a, "model_b": b, "k": int(k), "references": i == 0,
                        **kwargs},
             "out": f"{STEP_DIR}/k-{k}.json", "device_kwarg": "device"}
            for i, k in enumerate(ks)]


def sweep(models: Sequence[str | Path], ks: Sequence[int], run_dir: str | Path,
          executor: Any = None, *, retries: int = 1, log: Callable[[str], None] | None = None,
          on_step: Callable[[int], None] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The sweep through ``executor`` (default: in this process, one step after another): the
    part of the in-process sweep's result that the steps compute (``layers``,
    ``layer_names``, ``base_cost``, ``references`` and ``rows`` in the order of ``ks``).
    ``on_step(k)`` as each step finishes. A rerun redoes only unfinished steps."""
    from weightlab.executors import run_graph

    specs = sweep_specs(models, ks, **kwargs)
    k_of = {s["id"]: s["kwargs"]["k"] for s in specs}
    done = run_graph(specs, {}, executor, run_dir, retries=retries, log=log,
                     on_done=(lambda sid, rec: on_step(k_of[sid])) if on_step else None)
    results = [done[s["id"]]["result"] for s in specs]
    first = results[0]
    return {"layers": first["layers"], "layer_names": first["layer_names"],
            "base_cost": first["base_cost"], "references": first["references"],
            "rows": [r["rows"][0] for r in results]}
