"""Step callables over the core operations, for graphs built by hand (and the executor tests):
each takes JSON values and returns JSON. Paths in kwargs should be absolute (a remote worker's
working directory is not the caller's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train(model: str, data: str, out_dir: str, *, model_params: dict | None = None,
          epochs: int = 1, seed: int = 0, lr: float = 0.1, batch_size: int = 128,
          data_dir: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train one ``model`` on ``data`` into ``out_dir`` (resumes there after an interruption);
    the checkpoint, its tensor digest and its final test metrics."""
    from weightlab import checkpoint as ckpt_io
    from weightlab.data.bundle import load_data
    from weightlab.params import build_params
    from weightlab.training.config import TrainConfig
    from weightlab.training.loop import TrainJob
    from weightlab.training.loop import train as run_training

    bundle = load_data(data, data_dir=data_dir, device=device)
    cfg = build_params(TrainConfig, {"epochs": epochs, "seed": seed, "lr": lr,
                                     "batch_size": batch_size, "eval_every": 0})
    job = TrainJob(model, model_params or {}, bundle, cfg, Path(out_dir), device=device)
    ck = run_training(job, resume=True, progress=False, force=True)[0]
    header = ckpt_io.read_header(ck.path)
    return {"checkpoint": str(ck.path), "sha256": header["sha256"],
            "test": header.get("metrics", {}).get("test")}


def evaluate_average(checkpoints: list[str], data: str, *, data_dir: str | None = None,
                     device: str = "cpu") -> dict[str, Any]:
    """Test metrics of each checkpoint and of their uniform weight average (naive merging,
    θ = Σ θ_i / N, no alignment)."""
    import torch

    from weightlab import checkpoint as ckpt_io
    from weightlab.data.bundle import load_data
    from weightlab.evaluate import evaluate

    bundle = load_data(data, data_dir=data_dir, device=device)
    loader = bundle.loader("test", batch_size=500)
    loaded = [ckpt_io.load_model(p, device) for p in checkpoints]
    out: dict[str, Any] = {"models": [evaluate(net, loader) for net, _ in loaded]}
    states = [net.state_dict() for net, _ in loaded]
    avg = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
           if v.is_floating_point() else v for k, v in states[0].items()}
    net = loaded[0][0]
    with torch.no_grad():
        net.load_state_dict(avg)
    out["average"] = evaluate(net, loader)
    return out
