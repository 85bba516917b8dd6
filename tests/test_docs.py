"""The documentation contract: every hook and every command is documented, the CLI help in the
docs is current, the plugin directory matches registry.toml, the recipe examples validate, and
``mkdocs build --strict`` passes."""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _sync():
    spec = importlib.util.spec_from_file_location("sync_docs", REPO / "scripts" / "sync_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _commands() -> dict[str, list[str]]:
    """Top-level command → its subcommands ([] for a leaf)."""
    import typer
    from weightlab_cli.app import app

    tree = typer.main.get_command(app)
    return {name: sorted(getattr(cmd, "commands", {}) or []) for name, cmd in
            tree.commands.items()}


def test_every_hook_has_a_section_with_signature_arguments_return_and_example():
    from weightlab import hookspecs

    text = (DOCS / "plugins" / "hooks.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if n.startswith("weightlab_")]
    assert len(hooks) >= 6
    for hook in hooks:
        m = re.search(rf"^## {hook}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        assert m, f"docs/plugins/hooks.md has no section '## {hook}'"
        section = m.group(1)
        assert f"def {hook}(" in section and "**Arguments:**" in section
        assert "**Returns:**" in section and f"@hookimpl\ndef {hook}(" in section, hook


def test_every_command_has_a_page_with_its_help_block():
    for name, subs in _commands().items():
        page = DOCS / "commands" / f"{name}.md"
        assert page.is_file(), f"no docs/commands/{name}.md"
        text = page.read_text()
        assert f"<!-- BEGIN HELP: weightlab {name} -->" in text, name
        for sub in subs:
            assert f"<!-- BEGIN HELP: weightlab {name} {sub} -->" in text, (name, sub)
        assert f"[{name}]({name}.md)" in (DOCS / "commands" / "index.md").read_text()


def test_help_blocks_and_plugin_directory_are_current():
    stale = _sync().updated_pages()
    assert not stale, ("stale docs (run python scripts/sync_docs.py): "
                       + ", ".join(str(p.relative_to(REPO)) for p in stale))


def test_every_known_plugin_is_in_the_directory():
    import tomllib

    text = (DOCS / "plugins" / "directory.md").read_text()
    for p in tomllib.loads((REPO / "registry.toml").read_text())["plugin"]:
        assert f"## {p['name']}" in text and f"pip install -e {p['source']}" in text


def test_recipe_examples_in_the_docs_validate(tmp_path, cli):
    blocks = re.findall(r"```toml\n(.*?)```", (DOCS / "recipes.md").read_text(), re.S)
    recipes = [b for b in blocks if "[[step]]" in b and "do = " in b]
    assert recipes
    for i, text in enumerate(recipes):
        path = tmp_path / f"example{i}.toml"
        path.write_text(textwrap.dedent(text))
        code, out, err = cli("run", path, "--dry-run")
        assert code == 0, err


def test_every_reproduction_is_documented():
    recipes_md = (DOCS / "recipes.md").read_text()
    results_md = (DOCS / "results.md").read_text()
    for path in (REPO / "recipes").glob("*.toml"):
        assert f"recipes/{path.name}" in recipes_md and path.name in results_md, path.name


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None
                    and importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_mkdocs_build_strict(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                          "-d", str(tmp_path / "site")], cwd=REPO, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
