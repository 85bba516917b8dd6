"""The MNIST comparison of docs/results.md: three copies of one trained MLP fine-tuned with
different seeds, merged by every task-vector method and by uniform and greedy soups.

    .venv/bin/python plugins/taskvec/scripts/mnist_table.py --data-dir ../shared/data

prints the Markdown table (test top-1, 10,000 MNIST test images), with one torch thread as the
tests (the summation order, hence the trained models, depends on it). The trained models are
cached like :func:`weightlab.testing.trained` (``.pytest_cache/weightlab``), so the tests that
load this file (plugins/taskvec/tests) and this script train them once; about 15 s on a CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

# the base: a 2×128 MLP, one epoch on MNIST (5,000 training images held out for the greedy
# soup); the ingredients: one more epoch each at a constant lr, seeds 10, 11, 12
HELDOUT = 5000
BASE = {"model": "mlp", "data": "mnist", "models": 1, "epochs": 1, "heldout": HELDOUT,
        "model_params": {"depth": 2, "width": 128}, "train": {"lr": 0.05}}
FINETUNE = {"models": 3, "seed": 10, "heldout": HELDOUT,
            "train": {"epochs": 1, "lr": 0.05, "schedule": "constant"}}
# (label, method, parameters): what the table compares; K = 3 ingredients
METHODS = [
    ("task arithmetic, λ = 1/K", "task_arithmetic", {"scaling": 1 / 3}),
    ("task arithmetic, λ = 1", "task_arithmetic", {"scaling": 1.0}),
    ("TIES, k = 20 %, λ = 1", "ties", {"density": 0.2}),
    ("TIES, k = 20 % per tensor, λ = 1", "ties", {"density": 0.2, "scope": "tensor"}),
    ("TIES, k = 100 % (elect + disjoint mean only)", "ties", {"density": 1.0}),
    ("DARE, p = 0.5, arithmetic, λ = 1/K", "dare", {"p": 0.5, "scaling": 1 / 3}),
    ("DARE, p = 0.9, arithmetic, λ = 1/K", "dare", {"p": 0.9, "scaling": 1 / 3}),
    ("DARE, p = 0.5, TIES, λ = 1", "dare", {"p": 0.5, "combine": "ties"}),
    ("DARE, p = 0.9, TIES, λ = 1", "dare", {"p": 0.9, "combine": "ties"}),
    ("Model Stock", "model_stock", {}),
]


def finetuned(base: Path, *, models: int, seed: int, train: dict, data_dir: Path | None,
              heldout: int = 0) -> list[Path]:
    """``models`` copies of ``base`` fine-tuned on its dataset with seeds seed, seed+1, … (the
    same start, different data orders: ``TrainJob(init_states=[base])``, as ``weightlab sms``
    retrains its ingredients); cached by the base's digest, the arguments and the training
    code."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import testing
    from weightlab.data.bundle import load_data
    from weightlab.params import build_params
    from weightlab.training.config import TrainConfig
    from weightlab.training.loop import TrainJob
    from weightlab.training.loop import train as run_train

    ck = ckpt_io.load(base)
    spec = {"base": ck.digest(), "code": testing.training_code_digest(), "models": models,
            "seed": seed, "train": train, "heldout": heldout}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = testing.cache_dir() / f"finetuned-{ck.model['name']}-{key}"
    paths = [run_dir / f"model_{k + 1}.safetensors" for k in range(models)]
    if all(p.is_file() for p in paths):
        return paths
    bundle = load_data(ck.data["name"], data_dir=data_dir, heldout=heldout)
    cfg = build_params(TrainConfig, {**train, "seed": seed})
    job = TrainJob(ck.model["name"], ck.model.get("params") or {}, bundle, cfg, run_dir,
                   num_models=models, init_states=[ck.state])
    run_train(job, resume=True, progress=False, force=True)
    return paths


def ingredients(data_dir: Path) -> tuple[Path, list[Path]]:
    """The base checkpoint and the three fine-tuned ones."""
    from weightlab import testing

    b = dict(BASE)
    (base,) = testing.trained(b.pop("model"), b.pop("data"), data_dir=data_dir, **b)
    return base, finetuned(base, data_dir=data_dir, **FINETUNE)


def measure(data_dir: Path) -> list[dict]:
    """One row per model: label, test top-1 (fraction) and test loss."""
    import weightlab

    base, tuned = ingredients(data_dir)
    rows = []
    first = weightlab.merge(tuned, matcher="identity", data_dir=data_dir)["evaluation"]
    rows += [{**r, "model": f"ingredient {i + 1}"} for i, r in enumerate(first[:-1])]
    rows.append({**first[-1], "model": "uniform soup"})
    greedy = weightlab.operation("soup")(tuned, method="greedy", data_dir=data_dir,
                                         heldout=HELDOUT)
    rows.append({"model": f"greedy soup (chosen {greedy['chosen']})",
                 **greedy["rows"][-1]["test"]})
    for label, method, params in METHODS:
        ev = weightlab.merge(tuned, base=base, method=method, method_param=params,
                             data_dir=data_dir)["evaluation"]
        if rows[0]["model"] != "base":
            rows.insert(0, {**ev[-2], "model": "base"})
        rows.append({**ev[-1], "model": label})
    for t in (0.5,):
        for space in ("task", "weights"):
            ev = weightlab.merge(tuned[:2], base=base, method="slerp",
                                 method_param={"t": t, "space": space},
                                 data_dir=data_dir)["evaluation"]
            rows.append({**ev[-1], "model": f"SLERP of ingredients 1, 2 ({space}), t = {t}"})
    ev = weightlab.merge(tuned[:2], matcher="identity", data_dir=data_dir)["evaluation"]
    rows.append({**ev[-1], "model": "uniform soup of ingredients 1, 2"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="folder holding MNIST/raw")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # as the tests: another thread count trains other models
    rows = measure(args.data_dir)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| model | test top-1 | test loss |\n|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {100 * r['top1']:.2f}% | {r['loss']:.4f} |")


if __name__ == "__main__":
    main()
