"""A recipe's steps as a graph on an executor (:func:`weightlab.executors.run_graph`): steps whose
references do not connect them run at the same time, a step's references are resolved when
the steps it uses have finished, and a step whose operation splits into independent members
(``train`` of K models: one step per model) runs them as steps of the graph, then gathers.
What finished before is reused exactly as in a run without an executor (:class:`Runner`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightlab.recipes import commands
from weightlab.recipes.schema import Step


def run_on(runner: Any, executor: Any) -> None:
    """Run ``runner``'s recipe (a :class:`weightlab.recipes.Runner`) on ``executor``."""
    from weightlab.executors import GraphFailed, run_graph
    from weightlab.recipes.runner import StepFailed, slug

    index = {s.name: i for i, s in enumerate(runner.recipe.steps, start=1)}
    by_id = {slug(s.name): s for s in runner.recipe.steps}
    deps = {slug(s.name): [slug(d) for d in runner.uses(s)] for s in runner.recipe.steps}
    plans: dict[str, tuple] = {}
    computing: set[str] = set()  # digests of the steps submitted and not yet finished
    # a split step: its members' spec ids, and what its first member decided (kept or run)
    parent_of: dict[str, str] = {}
    member_specs: dict[str, dict[str, dict]] = {}  # split step → its members' resolved specs
    began: dict[str, tuple[str, Any]] = {}
    member_seconds: dict[str, float] = {}
    specs: list[dict] = []
    for sid, step in by_id.items():
        op = commands.command(step.do).operation
        subs = op.members(step.options, prefix=f"{sid}/") if op.members else []
        for sub in subs:
            parent_of[sub["id"]] = sid
            deps[sub["id"]] = list(deps[sid])
        deps[sid] = deps[sid] + [sub["id"] for sub in subs]
        specs += [{k: sub[k] for k in ("id", "call", "out")} | {"kwargs": {}}
                  for sub in subs]
        specs.append({"id": sid, "call": "weightlab.executors.tasks:operation",
                      "kwargs": {}, "out": f"{sid}/step.json"})

    def kept_spec(spec: dict, rec: dict) -> dict:
        """A step that returns the kept result (nothing to compute)."""
        return {**spec, "call": "weightlab.recipes.runner:kept",
                "kwargs": {"result_file": str(rec.get("result_file", ""))},
                "out": f"{spec['out'].rsplit('.', 1)[0]}-kept-{rec['hash']}.json",
                "here": True}

    waiting: dict[str, str] = {}  # step → the digest of the twin it waits for

    def begin(step: Step) -> tuple[str, Any] | None:
        """Reuse the step, or start it (once); None while a twin computes it (planned
        again only when that twin has finished: its plan cannot change before)."""
        if step.name in began:
            return began[step.name]
        if waiting.get(step.name) in computing:
            return None
        rec, plan = runner.reuse(index[step.name], step)
        if rec is not None:
            runner.records[step.name] = {**rec, "label": step.label}
            began[step.name] = ("kept", rec)
        elif plan[3] in computing:  # its twin is running: reuse it when it is done
            waiting[step.name] = plan[3]
            return None
        else:
            computing.add(plan[3])
            plans[step.name] = plan
            began[step.name] = ("run", absolute(plan[0], runner.start(index[step.name],
                                                                    step, plan)))
        return began[step.name]

    def prepare(spec: dict, results: dict) -> dict | None:
        sid = parent_of.get(spec["id"], spec["id"])
        step = by_id[sid]
        state = begin(step)
        if state is None:
            return None
        how, what = state
        if how == "kept":
            return kept_spec(spec, what)
        cmd = plans[step.name][0]
        placed = "device" if cmd.has("device") and "device" not in what else None
        if spec["id"] in parent_of:  # one member of a split step
            if sid not in member_specs:  # the resolved members, once per step
                member_specs[sid] = {m["id"]: m for m in cmd.operation.members(
                    what, prefix=f"{sid}/")}
            return {**spec, **member_specs[sid][spec["id"]]}
        if sid in member_specs:  # members done: the result
            return {**spec, "call": cmd.operation.gather, "kwargs": {"options": what},
                    "out": f"{sid}/gather-{plans[step.name][3]}.json", "here": True}
        return {**spec, "kwargs": {"op": step.do, "options": what},
                "out": f"{sid}/step-{plans[step.name][3]}.json",
                **({"device_kwarg": "device"} if placed else {})}

    def on_done(sid: str, record: dict) -> None:
        if sid in parent_of:
            parent = parent_of[sid]
            member_seconds[parent] = member_seconds.get(parent, 0.0) + record["seconds"]
            return
        step = by_id[sid]
        if step.name in plans:
            computing.discard(plans[step.name][3])
            seconds = record["seconds"] + member_seconds.get(sid, 0.0)
            rec = runner.finish(step, plans[step.name], record["result"], seconds)
            runner.records[step.name] = {**rec, "label": step.label}

    if any(rep.plot for rep in runner.recipe.reports):  # the report's import, while we wait
        import threading

        from weightlab import plotting

        threading.Thread(target=plotting.preload, daemon=True,
                         name="weightlab-preload").start()
    try:
        run_graph(specs, deps, executor, runner.run_dir.resolve(), prepare=prepare,
                  on_done=on_done, log=runner.echo)
    except GraphFailed as e:
        sid, why = next(iter(e.failed.items()))
        step = by_id[parent_of.get(sid, sid)]
        raise StepFailed(f"{runner._where(step)}: step {step.name!r} failed: "
                         f"{why}") from None
    runner.records = {s.name: runner.records[s.name] for s in runner.recipe.steps}


def absolute(cmd: commands.Command, options: dict[str, Any]) -> dict[str, Any]:
    """Relative paths (input files and Path options) made absolute: a worker (Ray, SLURM)
    runs in another working directory."""
    paths = {p.name for p, ann, meta in cmd.operation.parameters()
             if meta.input or "Path" in str(ann)}

    def one(v: Any) -> Any:
        return str(Path(v).resolve()) if isinstance(v, str) and v and \
            not Path(v).is_absolute() else v

    return {k: ([one(x) for x in v] if isinstance(v, list) else one(v))
            if k in paths else v for k, v in options.items()}
