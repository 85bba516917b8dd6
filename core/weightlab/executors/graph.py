"""Run a graph of step specs through an executor: every step whose dependencies are finished is
submitted at once, so independent steps run concurrently (as far as the executor allows).

Resumption is by files: a step whose result in the run directory matches its spec is not
redone. A step whose worker died (killed, node lost) is run again up to ``retries`` times; a
step that raised is reported, not retried. Steps that depend on a failed one are not started;
all others still run, and everything finished stays on disk, so running the same graph again
continues where it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from weightlab.errors import UsageError, WeightlabError
from weightlab.executors.spec import StepFailed, WorkerLost, check_spec, read_result
from weightlab.executors.step import run_step, stale_marker, stored_error


class GraphFailed(WeightlabError):
    """Some steps failed; ``failed`` maps step → error, ``blocked`` lists steps not started
    because a dependency failed. ``results`` holds the finished ones."""

    def __init__(self, failed: dict[str, str], blocked: list[str], results: dict[str, Any]):
        first = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
        skipped = f"; not started: {', '.join(blocked)}" if blocked else ""
        super().__init__(f"step {first[0]!r} failed: {first[1]}{more}{skipped}; finished "
                         f"steps are kept, run again to continue")
        self.failed, self.blocked, self.results = failed, blocked, results


def topological_order(ids: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm; a UsageError names an unknown dependency or a step on a cycle."""
    known = set(ids)
    for sid, ds in deps.items():
        if sid not in known:
            raise UsageError(f"deps: {sid!r} is not a step (steps: {', '.join(ids)})")
        for d in ds:
            if d not in known:
                raise UsageError(f"step {sid!r} depends on {d!r}, which is not a step")
    indegree = {s: len(set(deps.get(s, ()))) for s in ids}
    users: dict[str, list[str]] = {s: [] for s in ids}
    for s in ids:
        for d in set(deps.get(s, ())):
            users[d].append(s)
    order = [s for s in ids if indegree[s] == 0]
    for s in order:  # grows while iterating
        for u in users[s]:
            indegree[u] -= 1
            if indegree[u] == 0:
                order.append(u)
    if len(order) < len(ids):
        cyc = sorted(s for s in ids if indegree[s] > 0)
        raise UsageError(f"steps {', '.join(cyc)} depend on each other (a cycle)")
    return order


def _classify(spec: dict, run_dir: Path, exc: BaseException) -> Exception:
    """StepFailed when the step recorded an error, WorkerLost otherwise (the engines report a
    dead worker in their own words; the files say what happened)."""
    if isinstance(exc, StepFailed | WorkerLost):
        return exc
    err = stored_error(spec, run_dir)
    if err is not None:
        return StepFailed(spec["id"], err)
    if isinstance(exc, WeightlabError):  # e.g. a bad spec, raised before the step started
        return StepFailed(spec["id"], str(exc))
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return WorkerLost(spec["id"], detail)


def run_graph(specs: Sequence[dict[str, Any]], deps: Mapping[str, Sequence[str]] | None = None,
              executor: Any = None, run_dir: str | Path = ".", *, retries: int = 1,
              prepare: Callable[[dict, dict[str, Any]], dict] | None = None,
              on_done: Callable[[str, dict], None] | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run ``specs`` (see :mod:`weightlab.executors.spec`) respecting ``deps`` (step id → ids
    it needs) on ``executor`` (default: the local one, in this process); returns step id →
    its stored record (``record["result"]`` is what the callable returned).

    ``prepare(spec, results)`` may fill a spec from its dependencies' results just before it
    is submitted (the recipe runner resolves its references there); returning None defers the
    step until another running step finishes (the runner waits so for a step computing the
    same thing, instead of computing it twice). ``on_done(id, record)`` is
    called in this thread as each step finishes (recorded even if another step fails later).
    ``retries``: how often a step whose worker died is run again. Raises :class:`GraphFailed`
    after every runnable step has run when any step failed."""
    if retries < 0:
        raise UsageError(f"retries={retries} must be >= 0")
    log = log or (lambda msg: print(msg, file=sys.stderr))
    deps = {k: list(v) for k, v in (deps or {}).items()}
    run_dir = Path(run_dir).resolve()  # workers elsewhere do not share our working directory
    by_id: dict[str, dict] = {}
    outs: dict[str, str] = {}
    for s in specs:
        check_spec(s)
        if s["id"] in by_id:
            raise UsageError(f"step id {s['id']!r} appears twice")
        if s["out"] in outs:
            raise UsageError(f"steps {outs[s['out']]!r} and {s['id']!r} write the same "
                             f"out={s['out']!r}")
        by_id[s["id"]], outs[s["out"]] = s, s["id"]
    order = topological_order(list(by_id), deps)
    own = executor is None
    if own:
        from weightlab.executors.local import LocalExecutor

        executor = LocalExecutor()
    results: dict[str, dict] = {}
    failed: dict[str, str] = {}
    attempts: dict[str, int] = {}
    running: dict[Future, dict] = {}
    started: set[str] = set()

    def finish(sid: str, record: dict) -> None:
        results[sid] = record
        if on_done is not None:
            on_done(sid, record)

    def submit(batch: list[dict]) -> None:
        out = [s for s in batch if not s.get("here")]
        for spec, fut in zip(out, executor.submit_many(out, str(run_dir)), strict=True):
            attempts[spec["id"]] = attempts.get(spec["id"], 0) + 1
            running[fut] = spec
        for spec in batch:  # bookkeeping steps: here, while the others run
            if spec.get("here"):
                attempts[spec["id"]] = attempts.get(spec["id"], 0) + 1
                fut = Future()
                try:
                    fut.set_result(run_step(spec, run_dir))
                except Exception as e:  # noqa: BLE001 - classified like a worker's error
                    fut.set_exception(e)
                running[fut] = spec

    def retry_or_fail(spec: dict, err: Exception) -> None:
        sid = spec["id"]
        if isinstance(err, WorkerLost) and attempts[sid] <= retries:
            log(f"{err}; running it again (attempt {attempts[sid] + 1} of {retries + 1})")
            submit([spec])
        else:
            failed[sid] = err.error if isinstance(err, StepFailed) else (
                f"its worker stopped without finishing ({err.detail}), "  # type: ignore
                f"{attempts[sid]} attempt(s)")
            log(f"{sid}: {failed[sid]}")

    try:
        while True:
            ready = [s for s in order if s not in started
                     and all(d in results for d in deps.get(s, ()))]
            batch = []
            deferred: str | None = None
            finished_now = False  # a step found finished: what waited on it may go now
            for sid in ready:
                started.add(sid)
                prepared = prepare(dict(by_id[sid]), results) if prepare else by_id[sid]
                if prepared is None:
                    started.discard(sid)  # asked again when a running step finishes
                    deferred = sid
                    continue
                spec = check_spec(prepared)
                record = read_result(spec, run_dir)
                if record is not None:
                    log(f"{sid}: finished earlier, not redone")
                    finish(sid, record)
                    finished_now = True
                    continue
                if (m := stale_marker(spec, run_dir)) is not None:
                    log(f"{sid}: an earlier worker (pid {m.get('pid')} on {m.get('host')}) "
                        f"stopped without finishing it; running it again")
                batch.append(spec)
            if batch:
                submit(batch)
            if not running:
                if deferred and not finished_now:
                    raise UsageError(f"step {deferred!r} was deferred with nothing running to "
                                     f"wait for")
                if ready:  # some finished earlier (or a deferred one may go now): look again
                    continue
                break  # everything ran, or what is left depends on a failed step
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                spec = running.pop(fut)
                err: Exception | None = None
                try:
                    record = fut.result()
                except Exception as e:  # noqa: BLE001 - classified and reported below
                    record = read_result(spec, run_dir)  # written just before the worker died
                    err = None if record is not None else _classify(spec, run_dir, e)
                if err is None:
                    finish(spec["id"], record)  # outside the try: on_done's errors propagate
                else:
                    retry_or_fail(spec, err)
    finally:
        if own:
            executor.close()
    if failed:
        blocked = [s for s in order if s not in started]
        raise GraphFailed(failed, blocked, results)
    return results
