"""Fixtures of the timm plugin's tests: one torch thread (the shared 2-core machine) and the
in-process CLI."""

from __future__ import annotations

import json
import os

import pytest


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ.get("WEIGHTLAB_TEST_THREADS", "1")))


class CLI:
    """``cli("graph", …)`` → (exit code, stdout, stderr), run in-process."""

    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *argv) -> tuple[int, str, str]:
        from weightlab_cli.main import main

        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv):
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(capsys):
    return CLI(capsys)
