"""``weightlab_register_commands`` and ``weightlab_register_operations``: plugins add CLI
commands and operations; a plugin whose command registration fails is listed as broken and
adds nothing, while the others keep working."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer
from weightlab import hookimpl, plugins, testing
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import Result


@operation("hello")
def hello(name: Annotated[str, Opt("who to greet")] = "world",
          times: Annotated[int, Opt("how often", min=1)] = 1) -> Result:
    """Greets (a plugin operation)."""
    return Result({"greeting": " ".join([f"hello {name}"] * times)})


class Good:
    @hookimpl
    def weightlab_register_operations(self):
        return [hello]

    @hookimpl
    def weightlab_register_commands(self, app):
        @app.command("hello")
        def hello_cmd(name: str = "world"):
            """Say hello."""
            typer.echo(hello(name=name)["greeting"])


class Broken:
    @hookimpl
    def weightlab_register_commands(self, app):
        app.command("half")(lambda: None)
        raise RuntimeError("no commands today")


class NotAnOperation:
    @hookimpl
    def weightlab_register_operations(self):
        return [print]


def test_commands_of_a_good_plugin_are_added_and_a_broken_one_adds_none():
    app = typer.Typer()
    failed = plugins.register_commands(app, extra=[("good", Good()), ("broken", Broken())])
    names = [c.name for c in app.registered_commands]
    assert "hello" in names and "half" not in names
    assert "soup" in names and "pfm" in names  # the installed plugins' commands
    assert list(failed) == ["broken"] and "no commands today" in failed["broken"]
    state = testing.plugin_state(("good", Good()), ("broken", Broken()))
    assert state.plugins["good"].status == "ok" and state.plugins["good"].commands == ["hello"]
    assert state.plugins["broken"].status == "broken"
    assert "no commands today" in state.plugins["broken"].error


def test_plugin_operations_run_by_name_and_in_recipes(tmp_path):
    with testing.registered(("good", Good())):
        import weightlab

        assert weightlab.operation("hello")(name="ops", times=2)["greeting"] == \
            "hello ops hello ops"
        from weightlab.recipes import Runner, load

        path = tmp_path / "r.toml"
        path.write_text('[[step]]\nname = "hi"\ndo = "hello"\nname_ = 1\n')
        with pytest.raises(Exception, match="unknown option 'name_'"):
            load(path)
        path.write_text('[[step]]\nname = "hi"\ndo = "hello"\ntimes = 0\n')
        with pytest.raises(Exception, match="0 is below the minimum 1"):
            load(path)
        path.write_text('[[step]]\nname = "hi"\ndo = "hello"\ntimes = 3\n')
        res = Runner(load(path), tmp_path / "run", echo=lambda m: None).run()
        assert res["steps"][0]["ran"]
        assert (tmp_path / "run" / "hi" / "result.json").read_text().count("hello world") == 3


def test_an_undeclared_operation_breaks_its_plugin_only():
    state = testing.plugin_state(("bad", NotAnOperation()))
    assert state.plugins["bad"].status == "broken"
    assert "not declared with @weightlab.ops.registry.operation" in state.plugins["bad"].error
    assert state.plugins["builtin"].status == "ok"


PLUGIN_SOURCE = '''
from typing import Annotated
from weightlab import hookimpl
from weightlab.ops.registry import Opt, operation
from weightlab.ops.results import Result

@operation("stamp")
def stamp(checkpoint: Annotated[str, Opt("a checkpoint", input=True)]) -> Result:
    """Reads a checkpoint's header."""
    from weightlab.checkpoint import read_header
    return Result({"model": read_header(checkpoint)["model"]["name"]})

@hookimpl
def weightlab_register_operations():
    return [stamp]
'''


def test_the_step_cache_follows_plugin_code_and_input_files(fake_site, tmp_path, digits_ckpt):
    """A finished step is reused while nothing changes; editing the plugin's code (same
    version, as an editable install does) or replacing the input checkpoint re-runs it."""
    from weightlab import checkpoint
    from weightlab.recipes import Runner, cache, load

    fake_site.add("weightlab-stamp", {"stamp": "wl_stamp"}, {"wl_stamp": PLUGIN_SOURCE})
    path = tmp_path / "r.toml"
    path.write_text(f'[[step]]\nname = "s"\ndo = "stamp"\ncheckpoint = "{digits_ckpt}"\n')

    def ran() -> bool:
        plugins.set_state(None)
        cache.package_fingerprint.cache_clear()
        return Runner(load(path), tmp_path / "run", echo=lambda m: None).run()["steps"][0]["ran"]

    assert ran() and not ran()
    (fake_site.root / "wl_stamp.py").write_text(PLUGIN_SOURCE + "\n# edited\n")
    assert ran() and not ran()
    net = testing.tiny_model("mlp", width=32, seed=5)
    info = checkpoint.model_info("mlp", {"width": 32}, (1, 8, 8), 10)
    checkpoint.save(checkpoint.from_model(net, info, data={"name": "digits"}), digits_ckpt,
                    force=True)
    assert ran() and not ran()
