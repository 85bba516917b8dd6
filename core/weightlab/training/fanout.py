"""Training K models as K independent steps (one per model, "members"), so an executor (local
worker processes, Ray, SLURM) trains them side by side; then one result, as if trained in one run.

Member k is ``weightlab.train(…, member=k)``: the run's model k alone, with the seed, the
initialization and the file name it has in the whole run (``model_<k>.safetensors`` in the run
directory); its metrics and resume state go to ``member-<k>/``. The models of a K-model run
never interact (each has its own seed, data order, optimizer), so a member's checkpoint equals
the whole run's model k bit for bit at equal torch thread counts — with one exception: a model
that draws random numbers while training (dropout, stochastic depth) draws them from the
process's generator, which K models in one process share, so its draws differ (a different
but equally valid sample). Linear mode connectivity measured *during* training needs models 1
and 2 side by side and cannot fan out.

:func:`split` says how a call splits (torch-free: a recipe's driver calls it), :func:`gather`
builds the K-model result from the members' files (and writes the run's ``metrics.jsonl``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from weightlab.errors import UsageError

STEP_DIR = "steps"
# options of a train call that decide how many models it trains, or that keep it in one piece
_SHAPE = ("pair", "models", "seeds", "recipe", "member", "lmc_freq", "lmc_param", "executor")
# options a member call does not take from the whole call (set per member, or the driver's own)
_NOT_PASSED = ("member", "executor", "executor_param", "log", "resume", "force")


def parse_seeds(seeds: Any) -> list[int] | None:
    """``seeds`` as a list of ints ("0,5,9" or [0, 5, 9]); None stays None."""
    if seeds is None:
        return None
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    try:
        values = [int(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        raise UsageError(f"seeds={seeds!r}: expected comma-separated integers such as "
                         f"0,1,2") from None
    if not values:
        raise UsageError(f"seeds={seeds!r}: expected at least one seed")
    if len(set(values)) < len(values):
        raise UsageError(f"seeds={seeds!r}: a seed appears twice (two identical models)")
    return values


def model_count(options: dict[str, Any]) -> int:
    """How many models a train call with ``options`` trains (``seeds``, ``models``, ``pair``,
    else its training recipe's ``models``, else 1)."""
    seeds = parse_seeds(options.get("seeds"))
    models, pair = options.get("models"), bool(options.get("pair"))
    if seeds is not None:
        if models is not None and models != len(seeds) or pair and len(seeds) != 2:
            raise UsageError(f"seeds={options['seeds']!r} gives {len(seeds)} models, but "
                             f"{'pair' if pair else f'models={models}'} asks for "
                             f"{2 if pair else models}")
        return len(seeds)
    if models:
        return int(models)
    if pair:
        return 2
    if options.get("recipe"):
        from weightlab.training import recipes

        return recipes.load(options["recipe"]).models or 1
    return 1


def split(options: dict[str, Any], minimum: int = 2) -> list[dict[str, Any]] | None:
    """The member calls of a train call (``options`` as the operation takes them), or None
    when it stays one call: fewer than ``minimum`` models, LMC during training, a member
    already, or an option that decides this still being a ``${…}`` reference of a recipe."""
    if any(isinstance(options.get(k), str) and "${" in options[k] for k in _SHAPE):
        return None
    if options.get("member") or options.get("lmc_freq") or options.get("lmc_param"):
        return None
    count = model_count(options)
    if count < minimum:
        return None
    base = {k: v for k, v in options.items() if k not in _NOT_PASSED}
    # every member trains in its own directory slice of the same run; a killed member continues
    # from its own resume state (``resume`` is always on, so a rerun's spec is the same)
    return [{**base, "member": k, "resume": True, "force": bool(options.get("force"))}
            for k in range(1, count + 1)]


def member_specs(options: dict[str, Any], prefix: str = "", minimum: int = 2
                 ) -> list[dict[str, Any]]:
    """One step spec per member (``weightlab.executors.tasks:operation`` of ``train``), its
    record at ``PREFIX/steps/model_<k>.json`` of the graph's run directory; none when the call
    does not split (:func:`split`)."""
    members = split(options, minimum) or []
    return [{"id": f"{prefix}model_{m['member']}", "call": "weightlab.executors.tasks:operation",
             "kwargs": {"op": "train", "options": m},
             "out": f"{prefix}{STEP_DIR}/model_{m['member']}.json",
             **({"device_kwarg": "device"} if not m.get("device") else {})}
            for m in members]


def gather(run_dir: str | Path, count: int) -> list[dict[str, Any]]:
    """The run's result rows (model, test_top1, test_loss: as a K-model run returns them) from
    the members' checkpoints, and the run's ``metrics.jsonl`` from theirs (by iteration, then
    model: the order a K-model run writes)."""
    from weightlab.atomic import write_text
    from weightlab.checkpoint_header import read_header

    run_dir = Path(run_dir)
    rows, records = [], []
    for k in range(1, count + 1):
        path = run_dir / f"model_{k}.safetensors"
        if not path.is_file():
            raise UsageError(f"{path}: missing; member {k} of {count} has not finished")
        test = read_header(path).get("metrics", {}).get("test", {})
        rows.append({"model": str(path), "test_top1": test.get("top1"),
                     "test_loss": test.get("loss")})
        log = run_dir / f"member-{k}" / "metrics.jsonl"
        if log.is_file():
            records += [json.loads(line) for line in log.read_text().splitlines() if line]
    records.sort(key=lambda r: (r.get("iter", 0), r.get("model", 0)))
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return rows


def gathered(options: dict[str, Any]) -> list[dict[str, Any]]:
    """A graph step: :func:`gather` for the train call ``options`` (the recipe runner's step
    after its members)."""
    if not options.get("out"):
        raise UsageError("out: a fanned-out training needs its run directory")
    return gather(options["out"], model_count(options))
