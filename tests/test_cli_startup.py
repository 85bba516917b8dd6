"""Listing, showing and inspecting never load torch (nor numpy): components describe themselves
from their class attributes and ``Params`` dataclasses, and component modules import torch
inside their methods. Start-up *times* are measured in benchmarks/bench_cli_startup.py."""

from __future__ import annotations

import json
import subprocess
import sys

from weightlab import plugins
from weightlab.components import KINDS

HEAVY = ("torch", "numpy", "torchvision", "scipy", "sklearn", "matplotlib")

_RUN = """
import io, json, sys, contextlib
from weightlab_cli.main import main
failed = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        if main(argv) != 0:
            failed.append(argv)
heavy = json.loads(sys.argv[2])
print(json.dumps({"failed": failed, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def _commands() -> list[list[str]]:
    reg = plugins.registry()
    cmds = [["list", k] for k in KINDS] + [["list", k, "--json"] for k in KINDS]
    for kind in KINDS:
        for e in reg.all(kind):
            cmds.append(["show", kind, e.qualified])
            cmds += [["show", kind, ex] for ex in getattr(e.cls, "examples", ())[:2]]
    cmds += [["plugins", "list"], ["plugins", "list", "--json"], ["plugins", "available"]]
    cmds += [["plugins", "inspect", name] for name, info in plugins.state().plugins.items()
             if info.status == "ok"]
    return cmds


def test_listing_showing_and_inspecting_import_no_torch():
    cmds = _commands()
    assert len(cmds) > 40  # every component of every installed plugin is shown
    out = subprocess.run([sys.executable, "-c", _RUN, json.dumps(cmds),
                          json.dumps(HEAVY)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["failed"] == [], out.stderr[-2000:]
    assert result["loaded"] == [], f"listing loaded {result['loaded']}"

