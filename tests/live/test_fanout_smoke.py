"""A short run of the fan-out load test: it starts, delivers every event, and reports."""

from __future__ import annotations

import pytest

from load_tests import fanout

pytestmark = pytest.mark.slow


def test_fanout_load_test_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    code = fanout.main(
        [
            "--viewers", "60", "--events", "3", "--rate", "20", "--client-processes", "1",
            "--settle-s", "0.2", "--drain-s", "0.5", "--no-node",
        ]
    )  # fmt: skip
    output = capsys.readouterr().out
    assert code == 0, output
    assert "delivered 180/180" in output and "µs per delivered event" in output
