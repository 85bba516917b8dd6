"""Fixtures of the timm plugin's tests: one torch thread (the shared 2-core machine) and the
in-process CLI."""

from __future__ import annotations

import pytest
from weightlab.pytest_fixtures import pytest_configure  # noqa: F401


@pytest.fixture
def cli(capsys):
    """The CLI run in-process (weightlab_cli.testing.CLI)."""
    from weightlab_cli.testing import CLI

    return CLI(capsys)
