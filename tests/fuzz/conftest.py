"""Fuzz fixtures: the populated world (from the security tests) and the count report."""

from __future__ import annotations

import pytest

from tests.fuzz.stats import COUNTS
from tests.security.conftest import world

__all__ = ["world"]


@pytest.fixture(scope="session", autouse=True)
def _report_counts(request: pytest.FixtureRequest) -> object:
    yield
    if COUNTS:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"  {target}: {n}" for target, n in sorted(COUNTS.items())]
        if reporter is not None:
            reporter.write_line("generated inputs (fuzz and model tests):\n" + "\n".join(lines))
