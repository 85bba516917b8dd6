"""Running a recipe: each step calls its operation (:mod:`weightlab.ops`) with the step's
resolved options; the operation's ``to_json()`` is kept as the step's result.

The run directory holds:

- ``state.json``: per step its status, its cache key, its outputs. The key covers the resolved
  options, the versions of weightlab and of every plugin, a fingerprint of the code of core
  and of the plugins the step uses (editable installs change code without a version bump), the
  contents of its input files and the keys of the steps it uses. A finished step whose hash is
  unchanged and whose outputs exist is not redone; changing a step redoes it and every step
  that uses it. A step whose hash equals a
  finished step's — of this recipe or of another recipe run into the same directory — reuses
  that step's outputs (recipes sharing a run directory train a shared pair once).
- ``<step>/``: the step's outputs (``--out`` defaults there) and ``result.json``.
- ``recipe-<name>/``: ``recipe.toml`` (the file as given), ``resolved.json`` (vars, every
  step's options after references were resolved), ``versions.json`` (weightlab, every
  plugin, python, torch), ``metrics.json`` (all results), ``report.md`` and the report plots.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weightlab.atomic import write_text
from weightlab.errors import WeightlabError
from weightlab.recipes import cache, commands, refs, report
from weightlab.recipes.schema import Recipe, Step

STATE = "state.json"
FORMAT = 1
# where a step runs and where its files go do not change what it computes: two steps whose
# other options agree are one computation (the second reuses the first's outputs)
NOT_HASHED = ("device", "out", "plot")


class StepFailed(WeightlabError):
    pass


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / (recipe.path.stem + ("-quick" if recipe.quick else ""))


def slug(name: str) -> str:
    """A step's directory name: ``merge[weight,repair]`` → ``merge-weight-repair``."""
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9_.-]", "-", name)).strip("-")


class Runner:
    def __init__(self, recipe: Recipe, run_dir: Path, *, force: bool = False,
                 device: str | None = None, echo: Callable[[str], None] = print,
                 executor: Any = None):
        self.recipe, self.run_dir, self.force, self.device = recipe, Path(run_dir), force, device
        # where steps run (weightlab.executors): None runs them here, one after another
        self.executor = executor
        self.echo = echo
        # what this recipe's run leaves besides the steps' outputs; several recipes may share
        # one run directory (and their common steps), each keeps its own record
        self.record_dir = self.run_dir / f"recipe-{recipe.path.stem}"
        self.state = self._load_state()
        self.records: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []

    # ---- state -------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        path = self.run_dir / STATE
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("format") == FORMAT:
                    return data
            except json.JSONDecodeError:
                pass
            self.echo(f"{path}: unreadable run state; every step will run again")
        return {"format": FORMAT, "recipe": str(self.recipe.path), "steps": {}}

    def _save_state(self) -> None:
        self.state["quick"] = self.recipe.quick
        write_text(self.run_dir / STATE, json.dumps(self.state, indent=2))

    # ---- references --------------------------------------------------------------------------
    def resolve(self, body: str, each: Step | None = None) -> Any:
        names = list(self.records) + ["each"]
        head, rest = refs.split(body, names)
        if head == "run" and not rest:
            return str(self.run_dir)
        if head == "each" and each is not None:
            head = each.name
        rec = self.records.get(head)
        if rec is None:
            raise refs.RefError(f"${{{body}}}: step {head!r} has not run")
        if not rest:
            raise refs.RefError(f"${{{body}}}: name an output, result.<path> or an option")
        key, more = rest[0], rest[1:]
        if key in rec["outputs"] and not more:
            return rec["outputs"][key]
        if key == "result":
            return refs.walk(rec.get("result"), more, f"${{{body}}}")
        if key in ("name", "label"):
            return rec.get(key, rec["name"])
        if key in rec["options"]:
            return refs.walk(rec["options"][key], more, f"${{{body}}}")
        known = sorted({*rec["outputs"], "result", "name", "label", *rec["options"]})
        raise refs.RefError(f"${{{body}}}: step {head!r} has no {key!r}; it has "
                            f"{', '.join(known)}")

    def _resolve_options(self, step: Step, cmd: commands.Command) -> tuple[dict, list[str]]:
        used: list[str] = []

        def resolve(body: str) -> Any:
            head, _ = refs.split(body, list(self.records))
            if head in self.records:
                used.append(head)
            return self.resolve(body)

        try:
            options = refs.substitute(step.options, resolve)
        except refs.RefError as e:
            raise StepFailed(f"{self._where(step)}: {e}") from None
        step_dir = self.run_dir / slug(step.name)
        if cmd.has("out") and (cmd.out_by_default() or options.get("out")):
            if options.get("out") in (None, ""):
                options["out"] = str(step_dir if cmd.out_is_dir(options)
                                     else step_dir / f"{step.do}.safetensors")
            elif not Path(options["out"]).is_absolute():
                options["out"] = str(step_dir / options["out"])
        if options.get("plot") and not Path(options["plot"]).is_absolute():
            options["plot"] = str(step_dir / options["plot"])
        if self.device and cmd.has("device") and "device" not in options:
            options["device"] = self.device
        for key in ("out", "plot"):
            if key in options:
                options[key] = str(Path(options[key]))
        return options, list(dict.fromkeys(used))

    def _where(self, step: Step) -> str:
        return f"{self.recipe.path}:{self.recipe.line(('step', step.index)) or 1}"

    # ---- running -----------------------------------------------------------------------------
    def plan(self, step: Step) -> tuple[commands.Command, dict, list[str], str]:
        cmd = commands.command(step.do)
        options, used = self._resolve_options(step, cmd)
        upstream = [self.records[u]["hash"] for u in used]
        key = {"do": step.do, "options": {k: v for k, v in sorted(options.items())
                                          if k not in NOT_HASHED},
               "upstream": upstream, "code": cache.code_key(cmd, options),
               "inputs": cache.input_digests(cmd, options)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()
                                ).hexdigest()[:16]
        return cmd, options, used, digest

    def _twin(self, digest: str, name: str) -> tuple[str, dict[str, Any]] | None:
        """A finished step with the same hash (this recipe's or another's run in the same
        directory) whose outputs still exist."""
        for other, done in self.state["steps"].items():
            if (other != name and done.get("status") == "done" and done.get("hash") == digest
                    and all(Path(p).exists() for p in done.get("outputs", {}).values())):
                return other, done
        return None

    def reuse(self, i: int, step: Step) -> tuple[dict[str, Any] | None, tuple]:
        """The step's record when it need not run (finished before with the same key, or the
        same computation under another name), else None; and its plan."""
        cmd, options, used, digest = plan = self.plan(step)
        prev = self.state["steps"].get(step.name, {})
        total = len(self.recipe.steps)
        mine = str(self.recipe.path.resolve())
        if prev.get("recipe", mine) != mine and prev.get("hash") != digest and not self.force:
            raise StepFailed(f"{self._where(step)}: step {step.name!r} would overwrite the "
                             f"outputs of step {step.name!r} of {prev['recipe']} in "
                             f"{self.run_dir} (a different computation); rename the step or "
                             f"use another --out")
        if (not self.force and prev.get("status") == "done" and prev.get("hash") == digest
                and all(Path(p).exists() for p in prev.get("outputs", {}).values())):
            result = _read_json(Path(prev.get("result_file", self.run_dir / slug(step.name)
                                              / "result.json")))
            self.echo(f"[{i}/{total}] {step.name}: done before, not redone")
            return {**prev, "name": step.name, "options": options, "result": result,
                    "ran": False}, plan
        twin = None if self.force else self._twin(digest, step.name)
        if twin is not None:  # the same computation is in this run directory under another name
            name, done = twin
            self.state["steps"][step.name] = {
                "status": "done", "hash": digest, "outputs": done["outputs"], "uses": used,
                "same_as": done.get("same_as", name), "recipe": mine,
                "result_file": done.get("result_file", str(self.run_dir / slug(name)
                                                           / "result.json"))}
            self._save_state()
            self.echo(f"[{i}/{total}] {step.name}: same as {name}, reused")
            rec = self.state["steps"][step.name]
            return {**rec, "name": step.name, "options": options, "ran": False,
                    "result": _read_json(Path(rec["result_file"]))}, plan
        return None, plan

    def start(self, i: int, step: Step, plan: tuple) -> dict[str, Any]:
        """Record the step as started and return the options to call its operation with."""
        cmd, options, used, digest = plan
        prev = self.state["steps"].get(step.name, {})
        call = dict(options)
        in_run = _inside(options.get("out") or options.get("plot") or "", self.run_dir)
        if cmd.has("force") and in_run:
            call["force"] = True
        if cmd.has("resume") and prev.get("status") == "started" and prev.get("hash") == digest:
            call["resume"] = True  # an interrupted attempt of this very step: continue it
        self.echo(f"[{i}/{len(self.recipe.steps)}] {step.name}: "
                  f"{commands.call_text(cmd, options)}")
        self.state["steps"][step.name] = {"status": "started", "hash": digest,
                                          "recipe": str(self.recipe.path.resolve())}
        self._save_state()
        return call

    def finish(self, step: Step, plan: tuple, result: Any, seconds: float) -> dict[str, Any]:
        """Keep a finished step's result and outputs in the run state; its record."""
        cmd, options, used, digest = plan
        step_dir = self.run_dir / slug(step.name)
        step_dir.mkdir(parents=True, exist_ok=True)
        write_text(step_dir / "result.json", json.dumps(result, indent=2, default=str))
        outputs = collect_outputs(cmd, options)
        self.state["steps"][step.name] = {"status": "done", "hash": digest, "outputs": outputs,
                                          "uses": used, "seconds": round(seconds, 2),
                                          "result_file": str(step_dir / "result.json"),
                                          "recipe": str(self.recipe.path.resolve())}
        self._save_state()
        return {**self.state["steps"][step.name], "name": step.name, "options": options,
                "result": result, "ran": True}

    def run_step(self, i: int, step: Step) -> dict[str, Any]:
        """Run one step in this process (unless it can be reused)."""
        rec, plan = self.reuse(i, step)
        if rec is not None:
            return rec
        cmd = plan[0]
        call = self.start(i, step, plan)
        if "log" in inspect.signature(cmd.operation.func).parameters:
            call["log"] = self.echo
        t0 = time.time()
        try:
            result = cmd.operation(**call).to_json()
        except WeightlabError as e:
            raise StepFailed(f"{self._where(step)}: step {step.name!r} failed: {e}") from e
        return self.finish(step, plan, result, time.time() - t0)

    def run_on(self, executor: Any) -> None:
        """Every step through ``executor``, as a graph (:mod:`weightlab.recipes.on_executor`)."""
        from weightlab.recipes.on_executor import run_on

        run_on(self, executor)

    def uses(self, step: Step) -> list[str]:
        """The earlier steps ``step`` references (its dependencies)."""
        names = [s.name for s in self.recipe.steps]
        heads = [refs.split(b, names)[0] for b in refs.bodies(step.options)]
        return list(dict.fromkeys(h for h in heads if h in names and h != step.name))

    def dry_run(self) -> list[dict[str, Any]]:
        """Each step's call, with the outputs of earlier steps shown as ``<step.output>``."""
        planned = []
        for step in self.recipe.steps:
            cmd = commands.command(step.do)
            saved, self.resolve = self.resolve, lambda body, each=None: f"<{body}>"
            try:
                options, _ = self._resolve_options(step, cmd)
            finally:
                self.resolve = saved
            planned.append({"name": step.name, "do": step.do, "options": options,
                            "call": commands.call_text(cmd, options)})
        return planned

    def run(self) -> dict[str, Any]:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.record_dir / "recipe.toml", self.recipe.text)
        write_text(self.record_dir / "versions.json", json.dumps(versions(), indent=2))
        if self.executor is None:
            for i, step in enumerate(self.recipe.steps, start=1):
                self.records[step.name] = {**self.run_step(i, step), "label": step.label}
        else:
            self.run_on(self.executor)
        resolved = {"recipe": str(self.recipe.path), "title": self.recipe.title,
                    "quick": self.recipe.quick, "vars": self.recipe.vars,
                    "steps": [{"name": r["name"], "do": self.recipe.step(r["name"]).do,
                               "options": r["options"], "hash": r["hash"],
                               "outputs": r["outputs"]} for r in self.records.values()]}
        write_text(self.record_dir / "resolved.json", json.dumps(resolved, indent=2, default=str))
        write_text(self.record_dir / "metrics.json",
                   json.dumps({n: r["result"] for n, r in self.records.items()}, indent=2))
        tables = self.reports()
        return {"run_dir": str(self.run_dir), "record_dir": str(self.record_dir),
                "title": self.recipe.title,
                "quick": self.recipe.quick,
                "steps": [{"name": r["name"], "ran": r["ran"], "seconds": r.get("seconds"),
                           "outputs": r["outputs"]} for r in self.records.values()],
                "reports": tables, "warnings": self.warnings}

    def reports(self) -> list[dict[str, Any]]:
        tables = []
        for rep in self.recipe.reports:
            table = report.build(self.recipe, rep, self.resolve, self.warnings.append)
            if rep.plot:
                path = self.record_dir / rep.plot["file"]
                try:
                    table["plot"] = str(report.plot(table, rep.plot, path))
                except Exception as e:  # noqa: BLE001 - a plot must not lose the run's tables
                    self.warnings.append(f"{self.recipe.path}: report {rep.title!r}: plot "
                                         f"{path.name} failed: {type(e).__name__}: {e}")
            tables.append(table)
        md = f"# {self.recipe.title}\n\n" + "\n".join(report.markdown(t) for t in tables)
        write_text(self.record_dir / "report.md", md)
        return tables


def collect_outputs(cmd: commands.Command, options: dict[str, Any]) -> dict[str, str]:
    """The files a step wrote: ``out`` (and, for a directory, each checkpoint in it by stem)
    and ``plot``."""
    out: dict[str, str] = {}
    if options.get("out"):
        p = Path(options["out"])
        if p.exists():
            out["out"] = str(p)
        if p.is_dir():
            for f in sorted(p.glob("*.safetensors")):
                out[f.stem] = str(f)
    if options.get("plot") and Path(options["plot"]).exists():
        out["plot"] = str(options["plot"])
    return out


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    from weightlab import __version__, plugins

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    st = plugins.state()
    return {"weightlab": __version__, "python": platform.python_version(),
            "torch": version("torch"), "platform": platform.platform(),
            "plugins": {n: {"distribution": i.distribution, "version": i.version,
                            "status": i.status} for n, i in st.plugins.items()}}


def _inside(path: str, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _read_json(path: Path) -> Any:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        return json.loads(path.read_text())
    return None


def kept(result_file: str) -> Any:
    """A reused step's result, as a graph step (it computes nothing)."""
    return _read_json(Path(result_file))
