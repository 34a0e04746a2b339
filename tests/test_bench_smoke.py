"""A short run of the load-test harness itself: tiny scale, real servers, complete records.

No benchmark runs here (`make bench` does that); this proves the harness measures what it
claims, so a broken viewer, driver or report fails `make test` instead of a bench night.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from core.settings import Settings
from load_tests import charts, hubs, report, systems
from load_tests.viewers import Counters, Viewer, dialect


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        pass


def _frame(payload: bytes) -> bytes:
    assert len(payload) < 65_536
    if len(payload) < 126:
        return bytes((0x81, len(payload))) + payload
    return bytes((0x81, 126)) + len(payload).to_bytes(2, "big") + payload


async def test_viewer_counts_batched_split_and_coalesced_pushes() -> None:
    counters = Counters()
    viewer = Viewer("h:1", dialect("centrifugo", "room:1"), counters, sampled=True)
    transport = _Transport()
    viewer.connection_made(transport)  # type: ignore[arg-type]
    stamp = time.time_ns() - 5_000_000  # sent 5 ms ago
    tick = b'{"push":{"channel":"room:1","pub":{"data":{"type":"bench.tick","bt":%d},"offset":3}}}'
    stock = b'{"push":{"channel":"room:1","pub":{"data":{"bt":%d,"cq":%d},"offset":4}}}'
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        + _frame(b'{"id":1,"connect":{"client":"c"}}')
        + _frame(b'{"id":2,"subscribe":{"data":{"room":{"id":"1"}}}}')
        + _frame(b"{}")  # a ping
        + _frame(tick % stamp)
        # one batched frame: a tick and the latest stock value, which stands for 7 of them
        + _frame(b"\n".join([tick % stamp, stock % (stamp, 7)]) + b" " * 200)
    )
    for cut in range(0, len(stream), 7):  # TCP may split anywhere
        viewer.data_received(stream[cut : cut + 7])
    assert viewer.joined and viewer.done.result() is True
    assert transport.written[-1] == dialect("centrifugo", "room:1").pong, "ping answered"
    assert counters.events == 3 and counters.coalescable == 1
    assert viewer.max_cq == 7
    assert len(counters.latencies_us) == 3
    assert all(4_000 <= v < 1_000_000 for v in counters.latencies_us)


async def test_viewer_reports_a_refused_subscription() -> None:
    counters = Counters()
    viewer = Viewer("h:1", dialect("centrifugo", "room:1"), counters, sampled=False)
    viewer.connection_made(_Transport())  # type: ignore[arg-type]
    viewer.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        + _frame(b'{"id":1,"connect":{}}')
        + _frame(b'{"id":2,"error":{"code":102,"message":"unknown channel"}}')
    )
    assert viewer.done.result() is False
    assert counters.failed == 1 and counters.joined == 0


@pytest.mark.timeout(60)
async def test_harness_produces_a_complete_record(settings: Settings, tmp_path: Path) -> None:
    assert settings.redis_url and settings.database_url
    infra = systems.Infra(
        root=Path(tempfile.mkdtemp(prefix="bench-smoke-")),
        redis_url=settings.redis_url,
        database_url=settings.database_url,
        logs=tmp_path,
    )
    infra.room_id = await systems._seed_room(infra)
    chosen = [systems.FLOOR]
    if systems.livesell_hub_available():
        chosen.append(systems.LIVESELL)
    started = time.monotonic()
    results = {"hubs": await hubs.run(chosen, infra, hubs.SMOKE, lambda _: None, scaling=False)}
    assert time.monotonic() - started < 30

    for system in chosen:
        record = results["hubs"]["systems"][system.name]
        assert "error" not in record, record
        assert record["join"]["joined"] == 20 and record["join"]["failed"] == 0
        assert record["memory"]["kb_per_viewer"] is not None
        (fanout,) = record["fanout"]
        assert fanout["complete"] and fanout["delivered"] == fanout["expected"] > 0
        assert fanout["cpu_us_per_delivered"] > 0
        assert fanout["latency"]["p99_ms"] is not None and fanout["latency"]["p99_ms"] < 5_000
        mix = record["mix"]
        assert mix["complete"], mix
        assert mix["covered"] == mix["expected"] == mix["events"] * 20
        assert mix["events_per_cpu_s"] > 0 and mix["cdf"]

    results["targets"] = report.targets(results)
    written = json.loads(json.dumps(results, allow_nan=False))
    assert set(written["hubs"]["systems"]) == {s.name for s in chosen}
    table = report.table(results)
    assert "fan-out cost @20" in table and "uvloop-floor" in table
    pictures = charts.draw_all(results, tmp_path, "smoke")
    assert len(pictures) == 3
    assert all(p.stat().st_size > 10_000 for p in pictures)
