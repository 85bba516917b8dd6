"""Metrics of an SMS run: per phase (metrics.json) and over all phases (summary.json, a table,
summary.png). Compared at equal sparsity: the soup, the best and the mean ingredient, plain IMP
with the same retraining budget, and the logit ensemble of the ingredients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from weightlab.atomic import atomic_path, write_text

ROWS = ("soup", "best ingredient", "mean ingredient", "IMP", "ensemble")


def flops(model, input_shape, masks) -> dict | None:
    """Dense and non-zero FLOPs from ``weightlab.flopcount.count`` when the core provides it."""
    try:
        from weightlab.flopcount import count
    except ImportError:
        return None
    r = count(model, tuple(input_shape), masks=masks or None)
    return {"dense": r["dense"], "nonzero": r["nonzero"]}


def measure(model, masks, test, heldout, input_shape) -> dict[str, Any]:
    from weightlab.checkpoint import sparsity_report
    from weightlab.metrics import evaluate

    keep = ("loss", "top1", "top5")
    out: dict[str, Any] = {"test": {k: v for k, v in evaluate(model, test).items() if k in keep}}
    if heldout is not None:
        out["heldout"] = {k: v for k, v in evaluate(model, heldout).items() if k in keep}
    out["sparsity"] = sparsity_report(masks)["overall"] if masks else 0.0
    out["flops"] = flops(model, input_shape, masks) if input_shape else None
    return out


def evaluate_phase(pl, i: int, rate: float, target: float) -> dict:
    """Evaluate everything phase ``i`` produced and write its metrics.json."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import plugins

    from weightlab_sparse_soup.soups import has_batchnorm, reset_bn

    d, p = pl.dir, pl.p
    bundle = pl.bundle()
    test, held = bundle.loader("test", batch_size=1000), pl.heldout()
    shape = bundle.input_shape

    def load(path: Path, recalibrate: bool = True):
        """As the SMS code's final evaluation does for every retrained model: BatchNorm
        statistics recomputed on the calibration images (as the soup's are)."""
        net, ck = ckpt_io.load_model(path, pl.device, pl.registry)
        if recalibrate and has_batchnorm(net):
            reset_bn(net, pl.calibration())
        return net, ck

    net, ck = load(d.pruned(i), recalibrate=False)
    out: dict[str, Any] = {"phase": i, "phases": p.phases, "prune_rate": rate,
                           "target_sparsity": target,
                           "norm_drop": ck.extra.get("sms", {}).get("norm_drop"),
                           "pruned": measure(net, ck.masks, test, held, shape)}
    models, ingredients = [], []
    for k in range(1, p.ingredients + 1):
        net, ck = load(d.ingredient(i, k))
        models.append(net)
        ingredients.append({"ingredient": k, "train": describe_train(ck.train),
                            **measure(net, ck.masks, test, held, shape)})
    out["ingredients"] = ingredients
    net, ck = load(d.soup(i))
    out["soup"] = {"method": p.ensemble, "chosen": ck.provenance.get("chosen"),
                   **measure(net, ck.masks, test, held, shape)}
    reg = pl.registry or plugins.registry()
    ens = reg.create("ensembles", "ensemble").combine(models)
    out["ensemble"] = measure(ens, None, test, held, None)
    out["ensemble"]["sparsity"] = ingredients[0]["sparsity"]
    fl = [g["flops"] for g in ingredients]
    out["ensemble"]["flops"] = None if None in fl else {  # m forward passes
        key: sum(f[key] for f in fl) for key in ("dense", "nonzero")}
    if p.imp:
        net, ck = load(d.imp(i))
        out["imp"] = {"train": describe_train(ck.train),
                      **measure(net, ck.masks, test, held, shape)}
    best = max(ingredients, key=lambda g: g["test"]["top1"])
    out["best_ingredient"] = {"ingredient": best["ingredient"], **{
        k: best[k] for k in ("test", "heldout", "sparsity", "flops") if k in best}}
    out["mean_ingredient"] = _mean(ingredients)
    write_text(d.metrics(i), json.dumps(out, indent=1))
    return out


def describe_train(train: dict) -> dict:
    from weightlab.params import build_params
    from weightlab.training.config import TrainConfig

    from weightlab_sparse_soup.schedules import describe

    fields = set(TrainConfig.__dataclass_fields__)
    return describe(build_params(TrainConfig, {k: v for k, v in train.items() if k in fields}))


def _mean(ingredients: list[dict]) -> dict:
    out: dict[str, Any] = {"sparsity": ingredients[0]["sparsity"],
                           "flops": ingredients[0]["flops"]}
    for split in ("test", "heldout"):
        if split in ingredients[0]:
            out[split] = {k: sum(g[split][k] for g in ingredients) / len(ingredients)
                          for k in ingredients[0][split]}
    return out


def rows(phases: list[dict]) -> list[dict]:
    """One row per phase and model kind (the table of the summary)."""
    out = []
    for m in phases:
        entries = {"soup": m["soup"], "best ingredient": m["best_ingredient"],
                   "mean ingredient": m["mean_ingredient"], "IMP": m.get("imp"),
                   "ensemble": m["ensemble"]}
        for name in ROWS:
            e = entries[name]
            if e is None:
                continue
            out.append({"phase": m["phase"], "model": name, "sparsity": e["sparsity"],
                        "test_top1": e["test"]["top1"], "test_loss": e["test"]["loss"],
                        "heldout_top1": e.get("heldout", {}).get("top1"),
                        "flops": (e.get("flops") or {}).get("nonzero"),
                        "flops_dense": (e.get("flops") or {}).get("dense")})
    return out


def write_summary(d, params) -> dict:
    """summary.json and summary.png over the phases that have metrics so far."""
    from weightlab.params import to_dict

    phases = []
    for i in range(1, params.phases + 1):
        if d.metrics(i).is_file():
            phases.append(json.loads(d.metrics(i).read_text()))
    summary = {"run_dir": str(d.root), "config": to_dict(params), "phases": phases,
               "rows": rows(phases)}
    write_text(d.root / "summary.json", json.dumps(summary, indent=1))
    if phases:
        plot(summary["rows"], d.root / "summary.png")
        summary["plot"] = str(d.root / "summary.png")
    return summary


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in zip(ROWS, ("o-", "s--", "^:", "d-", "x-.")):
        pts = [r for r in table if r["model"] == name]
        if not pts:
            continue
        xs = [100 * r["sparsity"] for r in pts]
        ax_acc.plot(xs, [100 * r["test_top1"] for r in pts], style, label=name)
        ax_loss.plot(xs, [r["test_loss"] for r in pts], style, label=name)
    ax_acc.set(xlabel="sparsity (%)", ylabel="test top-1 (%)", title="accuracy per phase")
    ax_loss.set(xlabel="sparsity (%)", ylabel="test loss", title="loss per phase")
    ax_acc.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
