"""The CLI run in-process for tests (core's and every plugin's): ``cli("merge", …)`` returns
(exit code, stdout, stderr), ``cli.json(…)`` the parsed ``--json`` output of a command that
must succeed. Wrap pytest's ``capsys``::

    @pytest.fixture
    def cli(capsys):
        return CLI(capsys)
"""

from __future__ import annotations

import json
from typing import Any


class CLI:
    def __init__(self, capsys: Any):
        self.capsys = capsys

    def __call__(self, *argv: Any) -> tuple[int, str, str]:
        from weightlab_cli.main import main

        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: Any) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)
