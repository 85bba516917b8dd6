"""Every command of the platform CLI runs, its ``--json`` parses, exit codes are 2 for usage
errors and 1 for failures, tracebacks appear only with ``--debug``, and ``--help`` imports
no torch: plugins register their commands (``weightlab_register_commands``) from light modules,
their components are not loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from weightlab import hookimpl, testing
from weightlab.components import KINDS, Normalizer
from weightlab.errors import UsageError

HELP_PROBE = """
import json, sys
from weightlab_cli.main import main
codes = [main(args) for args in (["--help"], ["plugins", "--help"], ["train", "--help"],
                                 ["list", "--help"], [])]
from weightlab import plugins
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "numpy"))
plugin_modules = sorted({m.split(".", 1)[-1] for m in sys.modules if m.startswith("weightlab_")
                         and not m.startswith("weightlab_cli") and "." in m})
print(json.dumps({"codes": codes, "heavy": heavy, "loaded": plugins._STATE is not None,
                  "plugin_modules": plugin_modules}))
"""


def test_help_imports_no_torch_and_no_plugin_component():
    done = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    # no command at all prints the help and is a usage error (click's no_args_is_help)
    assert probe["codes"] == [0, 0, 0, 0, 2] and probe["heavy"] == []
    assert probe["loaded"] is False  # the component registry was never built
    # what plugins load for --help: their hook module and their commands' module, nothing else
    assert set(probe["plugin_modules"]) <= {"plugin", "cli"}, probe["plugin_modules"]
    assert "Usage" in done.stdout and "plugins" in done.stdout


def test_plugins_commands(cli):
    listed = {p["name"]: p for p in cli.json("plugins", "list")}
    assert listed["builtin"]["status"] == "ok"
    assert listed["builtin"]["components"]["datasets"] == [
        "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet", "digits", "synthetic"]
    assert all(p["status"] == "ok" for p in listed.values()), listed
    code, out, _ = cli("plugins", "list")
    assert code == 0 and "builtin" in out and "status" in out

    detail = cli.json("plugins", "inspect", "builtin")
    assert detail["module"] == "weightlab.builtins" and detail["status"] == "ok"
    assert {"cifar_vgg", "cifar_resnet", "mlp", "torchvision"} <= {
        c["name"] for c in detail["details"]["models"]}
    code, out, _ = cli("plugins", "inspect", "builtin")
    assert code == 0 and "weightlab.builtins" in out
    code, _, err = cli("plugins", "inspect", "repiar")
    assert code == 2 and "did you mean 'repair'" in err

    assert cli.json("plugins", "validate") == {"ok": True, "problems": []}
    code, out, _ = cli("plugins", "validate")
    assert code == 0 and "all plugins valid" in out

    available = {p["name"]: p for p in cli.json("plugins", "available")}
    assert set(available) >= {"repair", "woodfisher", "sparse-soup", "zipit"}
    assert all(p["installed"] for p in available.values())
    code, out, _ = cli("plugins", "available")
    assert code == 0 and "known plugins" in out


@pytest.mark.parametrize("kind", KINDS)
def test_list_every_kind(cli, kind):
    rows = cli.json("list", kind)
    assert isinstance(rows, list)
    for r in rows:
        assert set(r) == {"name", "plugin", "summary", "examples"} and r["summary"]
    if kind == "models":
        assert {"cifar_vgg", "cifar_resnet", "mlp", "torchvision"} <= {r["name"] for r in rows}
    if kind == "datasets":
        assert {"mnist", "cifar10", "cifar100", "digits"} <= {r["name"] for r in rows}
    code, out, _ = cli("list", kind[:-1])  # the singular works too
    assert code == 0 and kind in out


def test_list_unknown_kind(cli):
    code, out, err = cli("list", "normaliser")
    assert code == 2 and out == ""
    assert err.startswith("error: unknown kind 'normaliser' (did you mean 'normalizers'?)")


def test_show_prints_parameters_and_docstring(cli):
    code, out, err = cli("show", "models", "cifar_resnet20")
    assert code == 0, err
    for text in ("model cifar_resnet20", "from plugin builtin", "depth", "width", "init",
                 "one of bn, ln,", "He et al. 2016", "272,474 parameters"):
        assert text in out
    data = cli.json("show", "models", "cifar_resnet20_4x")
    values = {p["name"]: p["value"] for p in data["parameters"]}
    assert values == {"depth": 20, "norm": "bn", "bias": True, "shortcut_bias": False,
                      "width": 4, "init": "default"}
    assert data["name"] == "cifar_resnet" and data["requested"] == "cifar_resnet20_4x"
    assert data["doc"].startswith("CIFAR ResNet-(6n+2)")
    code, out, _ = cli("show", "datasets", "synthetic")
    assert code == 0 and "n_train" in out and "smoke tests only" in out


def test_show_unknown_name_suggests(cli):
    code, out, err = cli("show", "models", "cifar_resnt20")
    assert code == 2 and out == ""
    assert err.startswith("error: unknown model 'cifar_resnt20'; did you mean 'cifar_resnet20'")
    code, _, err = cli("show", "datasets", "mnits")
    assert code == 2 and "did you mean 'mnist'" in err


@pytest.fixture(scope="module")
def mnist_mlps():
    """Two MLPs trained 2 epochs on MNIST (cached by weightlab.testing)."""
    return testing.trained("mlp", "mnist", data_dir=testing.shared_data_dir("MNIST"), epochs=2,
                           train={"lr": 0.05})


def test_evaluate(cli, mnist_mlps):
    """measured: test top-1 97.54% and 97.65% (2 epochs on MNIST, seeds 0 and 1)."""
    data_dir = testing.shared_data_dir("MNIST")
    rows = cli.json("evaluate", *mnist_mlps, "--data-dir", data_dir)
    assert [r["checkpoint"] for r in rows] == [str(p) for p in mnist_mlps]
    for r in rows:
        assert r["data"] == "mnist" and r["samples"] == 10_000 and r["sparsity"] == 0.0
        assert r["top1"] > 0.965 and r["top5"] > 0.995 and r["loss"] < 0.12
    assert rows[0]["top1"] != rows[1]["top1"]
    code, out, _ = cli("evaluate", mnist_mlps[0], "--data-dir", data_dir)
    assert code == 0 and "evaluation" in out and "%" in out
    code, _, err = cli("evaluate", mnist_mlps[0], "--data", "digits", "--split", "heldout")
    assert code == 1 and "no held-out split" in err
    code, _, err = cli("evaluate", mnist_mlps[0], "--split", "validation")
    assert code == 2 and "expected test, train or heldout" in err


def test_exit_codes_and_no_tracebacks(cli, tmp_path):
    cases = [
        (["frobnicate"], 2, "No such command"),
        (["show", "models"], 2, "Missing argument"),
        (["train"], 2, "Missing argument"),
        (["evaluate", tmp_path / "absent.safetensors"], 1, "no such checkpoint"),
        (["evaluate", tmp_path / "absent.safetensors", "--device", "cuda:7"], 1, None),
        (["import", tmp_path / "absent.pt", "--model", "mlp"], 1, "no such file"),
    ]
    for argv, expected, text in cases:
        code, out, err = cli(*argv)
        if text is None:  # either no such file, or no CUDA here (then it is a usage error)
            assert code in (1, 2)
        else:
            assert code == expected and text in err, (argv, code, err)
        assert "Traceback" not in out + err
    with pytest.raises(UsageError):  # --debug lets the exception (and its traceback) through
        cli("show", "models", "cifar_resnt20", "--debug")


class Broken(Normalizer):
    """A component whose parameter class is not a dataclass: ``show`` fails unexpectedly."""

    name = "broken_params"
    summary = "its Params is not a dataclass"

    class Params:
        pass


def test_unexpected_errors_are_one_line(cli):
    plugin = type("P", (), {"weightlab_register_normalizers":
                            staticmethod(hookimpl(lambda: [Broken]))})()
    with testing.registered(("brk", plugin), entry_points=False):
        code, out, err = cli("show", "normalizers", "broken_params")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TypeError")
    assert lines[0].endswith("(run with --debug for the traceback)")


@pytest.mark.parametrize(("kind", "command"), [("matchers", "merge"), ("normalizers", "merge"),
                                               ("pruners", "prune")])
def test_examples_in_show_use_options_the_command_accepts(cli, kind, command):
    """Every ``--option`` in a component's docstring example (what `weightlab show` prints) is
    an option of the command that uses the component (before: `show matchers weight` said
    --param, which merge rejects)."""
    import re

    code, help_text, _ = cli(command, "--help")
    assert code == 0
    options = set(re.findall(r"--[a-z][a-z-]*", help_text))
    for row in cli.json("list", kind):
        doc = cli.json("show", kind, row["name"])["doc"]
        for example in re.findall(r"weightlab " + command + r" [^`]*", doc):
            used = set(re.findall(r"--[a-z][a-z-]*", example))
            assert used <= options, (row["name"], used - options)
