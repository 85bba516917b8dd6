"""``weightlab run RECIPE.toml``: a pipeline of commands from a TOML recipe (see
docs/recipes.md). Also registers ``weightlab plugins new`` (from new_cmd)."""

from __future__ import annotations

from pathlib import Path

import typer

from weightlab_cli.common import (
    DEVICE_OPT,
    JSON_OPT,
    info,
    print_json,
    stderr_console,
    stdout_console,
)


def run(
    recipe: Path = typer.Argument(..., help="recipe file (TOML)"),
    quick: bool = typer.Option(False, "--quick", help="apply the recipe's [quick] overrides "
                               "(a CPU-sized run of the same pipeline)"),
    out: Path = typer.Option(None, "--out", "-o", help="run directory (default runs/<recipe>"
                             "[-quick])"),
    force: bool = typer.Option(False, "--force", help="redo every step, even finished ones"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and print each step's "
                                 "command; run nothing"),
    device: str = DEVICE_OPT,
    executor: str = typer.Option(None, "--executor", help="run independent steps at once on "
                                 "local, ray, slurm … (weightlab list executors); default: "
                                 "here, one after another"),
    executor_param: list[str] = typer.Option(None, "--param", "-p", help="executor parameter "
                                             "key=value, e.g. address=127.0.0.1:6379"),
    json_out: bool = JSON_OPT,
):
    """Validate a recipe completely (every option, component and parameter, with file and
    line), then run its steps in order; finished steps are not redone on a re-run."""
    from weightlab.ops.common import component

    ex = component("executors", executor, executor_param) if executor else None
    try:
        if ex is not None and not dry_run:
            ex.start()  # connect and warm workers while the recipe is loaded and validated
        _run(recipe, quick, out, force, dry_run, device, ex, json_out)
    finally:
        if ex is not None:
            ex.close()


def _run(recipe, quick, out, force, dry_run, device, ex, json_out) -> None:
    from weightlab.recipes import Runner, default_run_dir, load
    from weightlab.recipes.report import visible

    r = load(recipe, quick=quick)
    run_dir = out or default_run_dir(r)
    def echo(msg: str) -> None:  # step names hold brackets: no rich markup here
        stderr_console().print(msg, markup=False, highlight=False)

    runner = Runner(r, run_dir, force=force, device=device, echo=echo, executor=ex)
    if dry_run:
        planned = runner.dry_run()
        if json_out:
            print_json({"recipe": str(recipe), "quick": quick, "run_dir": str(run_dir),
                        "steps": planned})
        else:
            for p in planned:
                typer.echo(f"{p['name']}: {p['call']}")
        return
    info(f"{r.title}{' (quick)' if quick else ''} → {run_dir}")
    res = runner.run()
    for w in res["warnings"]:
        info(f"[yellow]warning:[/yellow] {w}")
    if json_out:
        print_json(res)
        return
    from rich.table import Table

    con = stdout_console()
    for t in res["reports"]:
        cols, rows = visible(t)
        table = Table(title=t["title"])
        for c in cols:
            table.add_column(c, overflow="fold")
        for row in rows:
            table.add_row(*row)
        con.print(table)
        if t.get("plot"):
            info(f"wrote {t['plot']}")
    ran = sum(s["ran"] for s in res["steps"])
    info(f"{ran} step{'s' if ran != 1 else ''} run, {len(res['steps']) - ran} reused; "
         f"results in {run_dir}")


def register(app: typer.Typer) -> None:
    from weightlab_cli import new_cmd

    app.command("run")(run)
    new_cmd.register()
