"""Fuzz fixtures: the populated world (from the security tests), and the count of generated
inputs printed in the terminal summary (the figures docs/reliability.md quotes)."""

from __future__ import annotations

import pytest

from tests.fuzz.stats import COUNTS
from tests.security.conftest import world

__all__ = ["world"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COUNTS:
        terminalreporter.section("generated inputs (fuzz and model tests)")
        for target, n in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{target}: {n}")
