"""``prune``: one-shot pruning of a checkpoint (or a sweep over sparsities), evaluated before
and after, re-normalized against the dense model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from weightlab.errors import UsageError
from weightlab.ops.common import CheckpointLike, component, describe, load_checkpoints
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import PruneResult

Params = dict[str, Any] | list[str] | None
SWEEP_FILES = ("sweep.json", "sweep.png")


@operation("prune", out="dir_with:sweep")
def prune(
    checkpoint: Annotated[CheckpointLike, Opt("dense (or already sparse) checkpoint",
                                              input=True)],
    pruner: Annotated[Any, Opt("pruner name (weightlab list pruners) or a Pruner")],
    sparsity: Annotated[float | None, Opt("fraction of zeros over the pruned weights, in "
                                          "[0, 1)")] = None,
    sweep: Annotated[list[float] | str | None, Opt("sparsities instead of sparsity; out is "
                                                   "then a directory")] = None,
    pruner_param: Annotated[Params, Opt("pruner parameters", aliases=("param",))] = None,
    normalizer: Annotated[Any, Opt("re-normalize with the dense model as reference: "
                                   "reset_bn, repair, rescale …")] = None,
    normalizer_param: Annotated[Params, Opt("normalizer parameters")] = None,
    calibration_samples: Annotated[int, Opt("training images for the normalizer (and at "
                                            "least this many for a data-driven pruner)",
                                            min=1)] = 2000,
    data: Annotated[str | None, Opt("dataset (default: the checkpoint's)")] = None,
    data_dir: Annotated[Path | None, Opt("dataset root")] = None,
    out: Annotated[Path | None, Opt("output checkpoint (directory with sweep; none: not "
                                    "saved)")] = None,
    batch_size: Annotated[int, Opt("evaluation batch size", min=1)] = 1000,
    device: Annotated[str | None, Opt("cpu, cuda, cuda:1 …")] = None,
    force: Annotated[bool, Opt("overwrite existing outputs", runner=True)] = False,
    executor: Annotated[Any, Opt("run a sweep's sparsities as independent steps on this "
                                 "executor (local, ray, slurm, …); default: in this process, "
                                 "the pruner's analysis computed once")] = None,
    executor_param: Annotated[Params, Opt("executor parameters")] = None,
    log: Any = None,
    on_result: Any = None,
) -> PruneResult:
    """One-shot pruning: prune, evaluate before and after, re-normalize, evaluate again, and
    write the sparse checkpoint with its masks. With ``sweep``: one record per sparsity and a
    plot; statistics that do not depend on the sparsity (the Fisher of woodfisher and
    diag_fisher) are computed once for the whole sweep. ``on_result(sparsity)`` is called
    after each sparsity of a sweep (progress)."""
    from weightlab import checkpoint as ckpt_io
    from weightlab import pruning
    from weightlab.atomic import write_text
    from weightlab.data.bundle import load_data

    say = log or (lambda msg: None)
    sparsities = _sparsities(sparsity, sweep)
    is_sweep = sweep is not None
    if out is not None:
        _check_outputs(Path(out), is_sweep, sparsities, force)
    first = component("pruners", pruner, pruner_param)
    norm = component("normalizers", normalizer, normalizer_param)
    loaded = load_checkpoints([checkpoint], device, check=False)
    dense, ck, dev, source = loaded.models[0], loaded.ckpts[0], loaded.device, loaded.paths[0]
    name = data or ck.data.get("name")
    needs = [f"pruner {first.name!r}"] if first.needs_data else []
    needs += [f"normalizer {norm.name!r}"] if norm is not None and norm.needs_data else []
    if not name and needs:
        raise UsageError(f"{source}: {' and '.join(needs)} need data but the checkpoint "
                         f"names no dataset; pass data=NAME (and data_dir)")
    loaders: dict[str, Any] = {}
    bundle = None
    if name:
        bundle = load_data(name, data_dir=data_dir, device=dev,
                           params=ck.data.get("params") if not data else None)
        loaders = {"evaluate_on": bundle.loader("test", batch_size=batch_size),
                   "calibration": bundle.loader("calibration", num_samples=calibration_samples,
                                                batch_size=500),
                   "pruner_data": pruner_data(bundle, first, calibration_samples)}
    say(f"pruning {source} with {first.name} to {', '.join(map(str, sparsities))} on {dev}"
        + (f", then {norm.name}" if norm else ""))
    provenance = {"command": "prune", "source": source, "source_sha256": ck.digest(),
                  "pruner": first.name, "params": first.params_dict(),
                  "normalizer": norm.name if norm else None,
                  "normalizer_params": describe(norm)["params"] if norm else None,
                  "calibration_samples": calibration_samples, "data": name, "device": dev,
                  "parent": ck.provenance}

    def keep(s: float, model, masks, rec, path: Path | None):
        final = rec.get("normalized") or rec.get("pruned")
        metrics = {"test": final, "prune": {k: rec.get(k) for k in ("dense", "pruned",
                                                                    "normalized")}} \
            if final else {}
        new = ckpt_io.from_model(model, ck.model, masks=masks,
                                 data=ck.data or (bundle.describe() if bundle else {}),
                                 train=ck.train, metrics=metrics,
                                 provenance={**provenance, "sparsity": s})
        if path is not None:
            ckpt_io.save(new, path, force=force)
            rec["checkpoint"] = str(path)
        return new

    if not is_sweep:
        model, masks, rec = pruning.one_shot(dense, first, sparsities[0], masks=ck.masks,
                                             normalizer=norm, **loaders)
        new = keep(sparsities[0], model, masks, rec, Path(out) if out else None)
        rec.setdefault("checkpoint", None)
        return PruneResult(rec, model=model, masks=masks, checkpoint=new, records=[rec])

    if executor is not None:
        records = _fan_out(loaded.paths[0], first, norm, sparsities, out, executor,
                           executor_param, data=data, data_dir=data_dir,
                           calibration_samples=calibration_samples, batch_size=batch_size,
                           log=say)
        if on_result is not None:
            for s in sparsities:
                on_result(s)
    else:
        records = None

    def each(s, model, masks, rec):
        keep(s, model, masks, rec, Path(out) / f"sparsity-{s:g}.safetensors" if out else None)
        if on_result is not None:
            on_result(s)

    if records is None:
        records = pruning.sweep(dense, first, sparsities, masks=ck.masks, normalizer=norm,
                                on_result=each, **loaders)
    data_out = {"directory": str(out) if out else None, "plot": None, "records": records}
    if out is not None:
        write_text(Path(out) / "sweep.json", json.dumps(records, indent=2, default=str) + "\n")
        if name:
            pruning.plot_sweep(records, Path(out) / "sweep.png",
                               title=f"{ck.model['name']} on {name}: {first.name}")
            data_out["plot"] = str(Path(out) / "sweep.png")
    return PruneResult(data_out, records=records)


def pruner_data(bundle: Any, pruner: Any, calibration_samples: int) -> Any:
    """The calibration loader a data-driven pruner reads (None for a data-free one): the first
    max(``calibration_samples``, the pruner's ``samples``) images of the seeded calibration
    order, so the normalizer's images are a prefix of the pruner's."""
    if not pruner.needs_data:
        return None
    wanted = max(calibration_samples, getattr(pruner.params, "samples", 0))
    return bundle.loader("calibration", num_samples=wanted, batch_size=500)


def _sparsities(sparsity: float | None, sweep: Any) -> list[float]:
    if (sparsity is None) == (sweep is None):
        raise UsageError("pass exactly one of sparsity=S or sweep=[S1, S2, …]")
    if sweep is not None:
        items = sweep.split(",") if isinstance(sweep, str) else list(sweep)
        try:
            values = [float(v) for v in items if str(v).strip()]
        except ValueError:
            raise UsageError(f"sweep={sweep!r}: expected comma-separated numbers such as "
                             f"0.5,0.7,0.9") from None
        if not values:
            raise UsageError(f"sweep={sweep!r}: expected at least one sparsity")
    else:
        values = [float(sparsity)]
    for v in values:
        if not 0.0 <= v < 1.0:
            field = "sweep" if sweep is not None else "sparsity"
            raise UsageError(f"{field}={v:g}: expected a fraction of zeros in [0, 1)")
    return values


def _check_outputs(out: Path, is_sweep: bool, sparsities: list[float], force: bool) -> None:
    from weightlab.atomic import check_writable

    if not is_sweep:
        if out.is_dir():
            raise UsageError(f"out={out}: is a directory; expected a checkpoint file path "
                             f"(directories are for sweep)")
        check_writable(out, force)
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={out}: exists and is not a directory (a sweep writes a "
                         f"directory)")
    names = list(SWEEP_FILES) + [f"sparsity-{s:g}.safetensors" for s in sparsities]
    taken = [n for n in names if (out / n).exists()]
    if taken and not force:
        raise UsageError(f"{out / taken[0]} exists; pass force=True to overwrite it")
    out.mkdir(parents=True, exist_ok=True)


def _fan_out(source: str, pruner: Any, norm: Any, sparsities: list[float], out: Any,
             executor: Any, executor_param: Params, **kwargs: Any) -> list[dict[str, Any]]:
    """The sweep as one step per sparsity through ``executor`` (each step is
    :func:`weightlab.prune` at one sparsity: the same checkpoints; the analysis is computed
    once per step)."""
    from weightlab import pruning_fanout

    if out is None:
        raise UsageError("executor: a fanned-out sweep writes its checkpoints; give out=DIR")
    ex = component("executors", executor, executor_param)
    data_dir = kwargs.pop("data_dir")
    try:
        return pruning_fanout.sweep(
            str(Path(source).resolve()), pruner.name, sparsities, Path(out), ex,
            pruner_params=pruner.params_dict(), normalizer=norm.name if norm else None,
            normalizer_params=norm.params_dict() if norm else None,
            data_dir=str(data_dir) if data_dir else None, **kwargs)
    finally:
        ex.close()
