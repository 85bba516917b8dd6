"""``weightlab plugins new NAME --kind KIND``: write an installable, tested plugin package from
the template in ``weightlab.templates``. Added to the ``plugins`` group by :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer

from weightlab_cli.common import FORCE_OPT, JSON_OPT, info, print_json


def new_plugin(
    name: str = typer.Argument(..., help="plugin name: lower-case words joined by - or _ "
                               "(the package is weightlab-NAME)"),
    kind: str = typer.Option(..., "--kind", help="matcher, normalizer, pruner, ensemble, "
                             "model or dataset"),
    out: Path = typer.Option(Path("."), "--out", "-o", help="directory in which the package "
                             "directory weightlab-NAME is written"),
    force: bool = FORCE_OPT,
    json_out: bool = JSON_OPT,
):
    """Write a plugin package: pyproject with the weightlab entry point, the hook, a component
    skeleton with its Params dataclass, tests using weightlab.testing, and a README."""
    from weightlab import __version__, templates

    n = templates.names(name, kind)
    _warn_if_taken(n)
    dest = templates.write(name, kind, out, force=force, weightlab_version=__version__)
    written = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    if json_out:
        print_json({"path": str(dest), "distribution": n["dist"], "module": n["module"],
                    "component": n["component"], "kind": n["kind"], "files": written})
        return
    typer.echo(str(dest))
    for f in written:
        typer.echo(f"  {f}")
    # the test extra brings pytest: an author's environment with weightlab alone has none
    # one unwrapped line, to copy as it is (rich would fold it at the terminal's width)
    typer.echo(f"next: pip install -e '{dest}[test]' && pytest {dest}/tests && "
               f"weightlab show {n['kind']} {n['component']}", err=True)


def _warn_if_taken(n: dict[str, str]) -> None:
    """A name already registered would clash once installed: say so (not an error — the
    qualified name plugin:name still resolves)."""
    from weightlab import plugins

    state = plugins.state()
    if n["name"] in state.plugins:
        info(f"[yellow]warning:[/yellow] a plugin named {n['name']!r} is already installed")
    if n["component"] in state.registry.entries[n["kind"]]:
        owner = state.registry.entries[n["kind"]][n["component"]][0].plugin
        info(f"[yellow]warning:[/yellow] plugin {owner!r} already provides a "
             f"{n['kind_singular']} {n['component']!r}; both will need the qualified name")


def register() -> None:
    from weightlab_cli import plugins_cmd

    if not any(c.name == "new" for c in plugins_cmd.app.registered_commands):
        plugins_cmd.app.command("new")(new_plugin)
