"""Retrain one pruned model (an ingredient or the IMP baseline) from a JSON-able spec: in this
process with the already loaded data (:func:`train_one`), or as a step of
:func:`weightlab.executors.run_graph` (:func:`retrain`, see :func:`step_spec`) on any executor
— local worker processes one per device, a Ray cluster, SLURM jobs.

A spec: ``init`` (the pruned checkpoint: weights and mask), ``run_dir``, ``train`` (TrainConfig
values), ``data`` (see :func:`load_bundle`), ``device``, ``threads``. The result is
``run_dir/model_1.safetensors``, written atomically; an interrupted run continues from its last
finished epoch (the training loop's ``resume.pt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESULT = "model_1.safetensors"
STEP_RECORD = "step.json"  # run_step's record beside the ingredient's run directory files


def load_bundle(spec: dict, device: str):
    """``spec``: name, data_dir, heldout, params, train_samples, seed → a DataBundle whose
    training split is cut to ``train_samples`` when given."""
    from weightlab.data.bundle import load_data

    from weightlab_sparse_soup.phases import subset

    bundle = load_data(spec["name"], data_dir=spec.get("data_dir"), device=device,
                       heldout=spec.get("heldout", 0), params=spec.get("params"))
    return subset(bundle, spec.get("train_samples"), spec.get("seed", 0))


def train_one(spec: dict, bundle=None, registry=None) -> Path:
    """Retrain ``spec["init"]`` under its mask with ``spec["train"]``; returns the result path."""
    import torch
    from weightlab import checkpoint as ckpt_io
    from weightlab.params import build_params
    from weightlab.training.config import TrainConfig
    from weightlab.training.loop import TrainJob, train

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    run_dir = Path(spec["run_dir"])
    ck = ckpt_io.load(spec["init"])
    bundle = bundle if bundle is not None else load_bundle(spec["data"], spec["device"])
    cfg = build_params(TrainConfig, spec["train"], prefix="retrain.")
    job = TrainJob(ck.model["name"], ck.model.get("params") or {}, bundle, cfg, run_dir,
                   device=spec["device"], init_states=[ck.state], masks=ck.masks)
    train(job, resume=True, progress=False, registry=registry, force=True)
    return run_dir / RESULT


def retrain(**spec: Any) -> dict[str, Any]:
    """The step callable: :func:`train_one` in the worker, loading its own data; returns the
    checkpoint and the digest of its tensors."""
    from weightlab import checkpoint as ckpt_io

    path = train_one(spec)
    return {"checkpoint": str(path), "sha256": ckpt_io.read_header(path)["sha256"]}


def step_spec(step: str, spec: dict, root: Path) -> dict[str, Any]:
    """The executor step of one retraining: ``step`` (e.g. phase_1/ingredient_2) is its id, its
    record goes beside the model (``run_dir/step.json``), and the executor's device (local
    ``devices``, a Ray or SLURM GPU) replaces ``spec["device"]`` when it assigns one."""
    out = (Path(spec["run_dir"]) / STEP_RECORD).resolve().relative_to(root.resolve())
    threads = spec.get("threads")
    return {"id": step, "call": "weightlab_sparse_soup.worker:retrain", "kwargs": spec,
            "out": out.as_posix(), "device_kwarg": "device",
            **({"resources": {"cpus": threads}} if threads else {})}
