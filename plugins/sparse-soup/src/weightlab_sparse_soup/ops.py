"""The sparse-soup plugin's operations: ``soup`` (average ingredients trained elsewhere) and
``sms`` (the Sparse Model Soups pipeline), registered through
``weightlab_register_operations`` so that recipes and notebooks run them like core's."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError
from weightlab.ops.common import CheckpointLike, component, load_checkpoints
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import Result


@dataclass
class SoupResult(Result):
    model: Any = None        # the soup (nn.Module)
    checkpoint: Any = None   # its Checkpoint (saved when out was given)


@dataclass
class SMSResult(Result):
    params: Any = None       # the pipeline's validated settings
    run_dir: Any = None


@operation("soup", out="file")
def soup(
    checkpoints: Annotated[list[CheckpointLike], Opt("ingredient checkpoints (same "
                                                     "architecture and mask)", input=True)],
    method: Annotated[Any, Opt("an ensemble: uniform, greedy, … or an Ensemble")] = "uniform",
    out: Annotated[Path | None, Opt("the soup's checkpoint (none: not saved)")] = None,
    method_param: Annotated[dict[str, Any] | list[str] | None,
                            Opt("parameters of the ensemble")] = None,
    data: Annotated[str | None, Opt("dataset for evaluation, BatchNorm statistics and "
                                    "greedy selection (default: the checkpoints')")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    heldout: Annotated[int, Opt("training images held out for selection", min=0)] = 0,
    bn_samples: Annotated[int, Opt("training images to recompute BatchNorm statistics",
                                   min=1)] = 5000,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
) -> SoupResult:
    """Average ingredients trained elsewhere into one model (uniform or greedy soup, or any
    registered ensemble); with data, compare it with each ingredient and with their logit
    ensemble."""
    from weightlab import checkpoint as ckpt_io
    from weightlab.batchnorm import has_batchnorm, reset_bn
    from weightlab.data.bundle import load_data

    from weightlab_sparse_soup.report import measure
    from weightlab_sparse_soup.soups import check_masks

    ens = component("ensembles", method, method_param)
    if not ens.saveable:
        raise UsageError(f"method={ens.name!r}: its result is not one model and cannot be "
                         f"saved as a soup; choose uniform, greedy, …")
    if ens.needs_data and heldout <= 0:
        raise UsageError(f"method={ens.name!r}: needs held-out training images, pass "
                         f"heldout=N")
    if len(checkpoints) < 2:
        raise UsageError(f"checkpoints: a soup needs at least two ingredients, got "
                         f"{len(checkpoints)}")
    if out is not None:
        ckpt_io.check_writable(out, force)
    loaded = load_checkpoints(checkpoints, device, check=False)
    nets, cks, names, dev = loaded.models, loaded.ckpts, loaded.paths, loaded.device
    name = data or cks[0].data.get("name")
    bundle = None
    if data or ens.needs_data or has_batchnorm(nets[0]):
        if not name:
            raise UsageError(f"{names[0]}: the checkpoint names no dataset; pass data=NAME")
        bundle = load_data(name, data_dir=data_dir, device=dev, heldout=heldout,
                           params=None if data else cks[0].data.get("params"))
    calib = bundle.loader("calibration", batch_size=500, num_samples=bn_samples) \
        if bundle else None
    held = bundle.loader("heldout", batch_size=1000) if bundle and heldout else None
    ens.shared_mask, ens.info = None, None
    model = ens.combine(nets, held, masks=[c.masks for c in cks], calibration=calib,
                        names=names)
    chosen = list((ens.info or {}).get("chosen") or range(1, len(nets) + 1))
    shared = ens.shared_mask
    if shared is None and any(c.masks for c in cks):  # an ensemble that ignores masks
        shared = check_masks([cks[i - 1].masks for i in chosen], names)
        ckpt_io.apply_masks(model, shared)
    rows = []
    if bundle is not None:
        test = bundle.loader("test", batch_size=1000)
        if has_batchnorm(nets[0]):  # score the ingredients as the soup: statistics recomputed
            nets = [reset_bn(copy.deepcopy(n), calib) for n in nets]
        for p, net, ck in zip(names, nets, cks):
            rows.append({"model": p, **measure(net, ck.masks, test, held, None)})
        logits = component("ensembles", "ensemble").combine(nets)
        rows.append({"model": "logit ensemble", **measure(logits, None, test, held, None)})
        rows[-1]["sparsity"] = rows[0]["sparsity"]
        rows.append({"model": f"{ens.name} soup", **measure(model, shared, test, held, None)})
    metrics = {k: v for k, v in rows[-1].items() if k in ("test", "heldout")} if rows else {}
    ck = ckpt_io.from_model(model, cks[0].model, masks=shared or {}, data=cks[0].data,
                            train=cks[0].train, metrics=metrics,
                            provenance={"kind": "soup", "method": ens.name,
                                        "params": ens.params_dict(), "ingredients": names,
                                        "chosen": chosen,
                                        "selection": ens.info if ens.needs_data else None})
    if out is not None:
        ckpt_io.save(ck, out, force=force)
    data_out = {"out": str(out) if out else None, "method": ens.name, "chosen": chosen,
                "sparsity": ckpt_io.sparsity_report(shared)["overall"] if shared else 0.0,
                "rows": rows, "data": name}
    return SoupResult(data_out, model=model, checkpoint=ck)


@operation("sms", out="dir")
def sms(
    checkpoint: Annotated[Path, Opt("the dense (or already sparse) trained model", input=True)],
    goal_sparsity: Annotated[float, Opt("final sparsity", min=0, max=1)] = 0.9,
    phases: Annotated[int, Opt("prune–retrain cycles", min=1)] = 3,
    ingredients: Annotated[int, Opt("models retrained per phase", min=1)] = 4,
    vary: Annotated[str, Opt("seed|weight_decay|retrain_length|learning_rate")] = "seed",
    values: Annotated[list[Any] | str | None, Opt("one value per ingredient (seed default: "
                                                  "s, s+1, …)")] = None,
    retrain_epochs: Annotated[int, Opt("epochs per ingredient and phase", min=1)] = 2,
    schedule: Annotated[str, Opt("FT|LRW|SLR|CLR|LLR|ALLR")] = "LLR",
    ensemble: Annotated[str, Opt("uniform|greedy")] = "uniform",
    data: Annotated[str | None, Opt("dataset (default: the checkpoint's)")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    heldout: Annotated[int, Opt("training images held out (greedy)", min=0)] = 0,
    out: Annotated[Path | None, Opt("run directory (default runs/sms-<checkpoint>)")] = None,
    phase: Annotated[int | None, Opt("run only phase i (reads phase i-1's soup)", min=1)
                     ] = None,
    workers: Annotated[int, Opt("ingredients retrained at once (local worker processes)",
                                min=1)] = 1,
    devices: Annotated[list[str] | str | None, Opt("devices workers take in turn")] = None,
    executor: Annotated[Any, Opt("where ingredients retrain: local, ray, slurm, … or an "
                                 "Executor (default: local with workers/devices)")] = None,
    executor_param: Annotated[dict[str, Any] | list[str] | None,
                              Opt("executor parameters")] = None,
    threads: Annotated[int | None, Opt("torch threads per ingredient (results are "
                                       "bit-identical only at equal thread counts)", min=1)
                       ] = None,
    pruner: Annotated[str, Opt("registered pruner")] = "global_magnitude",
    imp: Annotated[bool, Opt("plain IMP baseline with the same retraining budget")] = True,
    seed: Annotated[int, Opt("base seed")] = 0,
    batch_size: Annotated[int | None, Opt("retraining batch size", min=1)] = None,
    train_samples: Annotated[int | None, Opt("retrain on a seeded subset of N images", min=1)
                             ] = None,
    bn_samples: Annotated[int, Opt("images for BatchNorm statistics", min=1)] = 5000,
    original: Annotated[dict[str, Any] | list[str] | str | None,
                        Opt("pretraining recipe (default: the checkpoint's train header)")
                        ] = None,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("start the run directory anew", runner=True)] = False,
    log: Any = None,
) -> SMSResult:
    """Sparse Model Soups (Zimmer et al. 2024): per phase prune, retrain several ingredients
    under one mask, soup them and continue from the soup; compared with plain IMP, the best
    and mean ingredient and the logit ensemble. Interrupted runs resume from the last
    finished ingredient."""
    from weightlab import device as devmod

    from weightlab_sparse_soup.sms import Pipeline, make_params

    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    if isinstance(original, dict):
        original = [f"{k}={v}" for k, v in original.items()]
    else:  # "lr=0.1,epochs=160" as well as repeated lr=0.1 epochs=160
        from weightlab.params import split_assignments

        original = split_assignments(original)
    params = make_params({
        "goal_sparsity": goal_sparsity, "phases": phases, "ingredients": ingredients,
        "vary": vary, "values": list(values or []), "retrain_epochs": retrain_epochs,
        "schedule": schedule, "ensemble": ensemble, "pruner": pruner, "imp": imp, "seed": seed,
        "batch_size": batch_size, "original": list(original or []), "data": data,
        "data_dir": str(data_dir) if data_dir else None, "heldout": heldout,
        "train_samples": train_samples, "bn_samples": bn_samples})
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()]
    devs = [devmod.resolve(d.strip()) for d in devices] if devices else \
        [devmod.resolve(device)]
    run_dir = Path(out) if out else Path("runs") / f"sms-{Path(checkpoint).stem}"
    say = log or (lambda msg: None)
    ex = component("executors", executor, executor_param)
    pl = Pipeline(Path(checkpoint), params, run_dir, workers=workers, devices=devs,
                  executor=ex, threads=threads, force=force, log=say)
    if pl.resumed:
        say(f"continuing the SMS run in {run_dir}")
    try:
        summary = pl.run(phase)
    finally:
        if ex is not None:
            ex.close()
    return SMSResult(summary, params=params, run_dir=run_dir)


OPERATIONS = [soup, sms]
