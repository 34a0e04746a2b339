"""What closed connections leave is freed while the hub is quiet (`live.collector`): their
objects are a reference cycle only a full collection frees, and the hub runs one in a quiet
moment instead of leaving it to the next join storm. The automatic collector is off in these
tests, so only the hub's own collection can free the cycles."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from websockets.protocol import State
from websockets.server import ServerProtocol

from live.collector import QuietCollector
from tests.live.conftest import RawClient, Room, RunningHub, open_raw


@pytest.fixture
def collector_off() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lost_connection() -> weakref.ref[ServerProtocol]:
    """A WebSocket protocol whose connection ended without a closing handshake, dropped."""
    protocol = ServerProtocol(state=State.OPEN)
    protocol.receive_eof()
    protocol.data_to_send()
    return weakref.ref(protocol)


@pytest.mark.usefixtures("collector_off")
def test_a_quiet_moment_after_enough_closes_collects_their_cycles() -> None:
    collector = QuietCollector(min_closed=30, quiet=10)
    lost = _lost_connection()
    assert lost() is not None  # a cycle: plain reference counting does not free it

    collector.closed = 29
    assert collector.check(open_connections=0) is None  # too few closed, and still closing
    assert collector.check(open_connections=0) is None  # too few closed
    collector.closed += 1
    collector.opened = 10
    assert collector.check(open_connections=0) is None  # a busy moment: joins come first
    collector.closed += 10
    assert collector.check(open_connections=0) is None  # so are leaves
    assert collector.check(open_connections=200) is None  # 40 closed: under a quarter of 200
    assert lost() is not None

    spent = collector.check(open_connections=160)
    assert spent is not None and spent >= 0
    assert lost() is None
    assert collector.closed == 0
    assert collector.check(open_connections=0) is None  # nothing closed since


@pytest.mark.usefixtures("collector_off")
async def test_the_hub_frees_closed_viewers_once_it_is_quiet(hub: RunningHub, room: Room) -> None:
    collector = hub.hub.collector
    collector.min_closed = 1_000_000  # not yet
    viewers: list[RawClient] = []
    for _ in range(8):
        viewer = await open_raw(hub.url)
        await viewer.connect()
        await viewer.subscribe(f"room:{room.id}")
        viewers.append(viewer)
    protocols = [weakref.ref(s.protocol) for s in hub.hub.sessions if s.protocol is not None]
    assert len(protocols) == 8
    for viewer in viewers:
        await viewer.ws.close()
    viewers.clear()
    async with asyncio.timeout(5):
        while hub.hub.sessions:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)  # quiet checks passed, and the closed sessions are still there
    assert all(ref() is not None for ref in protocols)

    before = REGISTRY.get_sample_value("livesell_hub_quiet_collections_total") or 0.0
    collector.min_closed = 8
    async with asyncio.timeout(3):
        while any(ref() is not None for ref in protocols):
            await asyncio.sleep(0.05)
    assert REGISTRY.get_sample_value("livesell_hub_quiet_collections_total") == before + 1
    assert (REGISTRY.get_sample_value("livesell_hub_quiet_collection_seconds_total") or 0) > 0
