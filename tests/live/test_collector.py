"""The hub's full garbage collections (`live.collector`): held back while connections keep
opening, made in a quiet moment (or after holding back too long) once enough connections came or
went. What closed connections leave is a reference cycle only a full collection frees; where a
test turns the automatic collector off, only the hub's own collection can free it."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator

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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("collector_off")
def test_a_quiet_moment_after_enough_closes_collects_their_cycles() -> None:
    collector = QuietCollector(min_churn=30, quiet=10)
    lost = _lost_connection()
    assert lost() is not None  # a cycle: plain reference counting does not free it

    collector.closed = 9
    assert collector.check(open_connections=0) is None  # too few came or went
    collector.closed = 21
    assert collector.check(open_connections=0) is None  # 30 came or went, but still closing
    collector.opened = 10
    assert collector.check(open_connections=0) is None  # a busy moment: joins come first
    assert collector.check(open_connections=200) is None  # 40 came or went: under 200 / 4
    assert lost() is not None

    spent = collector.check(open_connections=156)
    assert spent is not None and spent >= 0
    assert lost() is None
    assert collector.check(open_connections=0) is None  # nothing came or went since


def _full_collections_while(allocate: Callable[[], object]) -> int:
    """How many full collections CPython made while `allocate` ran."""
    full: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(note)
    try:
        allocate()
    finally:
        gc.callbacks.remove(note)
    return len(full)


def _join_storm() -> list[list[object]]:
    """What a storm makes: objects the collector tracks, all of them kept."""
    return [[object()] for _ in range(200_000)]


def test_full_collections_wait_while_connections_keep_opening() -> None:
    clock = Clock()
    collector = QuietCollector(min_churn=1_000, quiet=10, max_defer_s=10.0, clock=clock)
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()  # what the process holds is not the storm's (as the hub does at start)
    try:
        assert _full_collections_while(_join_storm) > 0  # CPython's own, by default

        collector.opened = 10
        assert collector.check(open_connections=0) is None
        assert collector.deferring
        assert gc.get_threshold()[:2] == threshold[:2]  # young collections go on
        assert _full_collections_while(_join_storm) == 0

        clock.now = 5.0
        collector.opened = 10
        assert collector.check(open_connections=0) is None
        assert collector.deferring  # still opening: still held back

        assert collector.check(open_connections=0) is None  # quiet: CPython's again
        assert not collector.deferring
        assert gc.get_threshold() == threshold
    finally:
        collector.release()
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector_off")
def test_a_hub_that_never_quiets_down_still_collects() -> None:
    clock = Clock()
    collector = QuietCollector(min_churn=25, quiet=10, max_defer_s=10.0, clock=clock)
    threshold = gc.get_threshold()
    lost = _lost_connection()
    try:
        for now in (0.0, 5.0, 9.9):  # joins keep coming: held back, under `max_defer_s`
            clock.now = now
            collector.opened, collector.closed = 10, 5
            assert collector.check(open_connections=0) is None
        assert lost() is not None

        clock.now = 10.0
        collector.opened = 10
        assert collector.check(open_connections=400) is None  # 55 came or went: not due
        collector.opened = 50
        spent = collector.check(open_connections=400)  # 105 now: due, and held back 10 s
        assert spent is not None
        assert lost() is None
        assert collector.deferring  # and held back again, from now
        clock.now = 19.0
        collector.opened = 100
        assert collector.check(open_connections=0) is None
    finally:
        collector.release()
    assert gc.get_threshold() == threshold


@pytest.mark.usefixtures("collector_off")
async def test_the_hub_frees_closed_viewers_once_it_is_quiet(hub: RunningHub, room: Room) -> None:
    collector = hub.hub.collector
    collector.min_churn = 1_000_000  # not yet
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
    collector.min_churn = 8
    async with asyncio.timeout(3):
        while any(ref() is not None for ref in protocols):
            await asyncio.sleep(0.05)
    assert REGISTRY.get_sample_value("livesell_hub_quiet_collections_total") == before + 1
    assert (REGISTRY.get_sample_value("livesell_hub_quiet_collection_seconds_total") or 0) > 0


def test_two_hubs_of_one_process_hold_back_until_both_let_go() -> None:
    threshold = gc.get_threshold()
    first, second = QuietCollector(quiet=1), QuietCollector(quiet=1)
    try:
        for collector in (first, second):
            collector.opened = 1
            assert collector.check(open_connections=0) is None
        held = gc.get_threshold()
        assert held[2] > threshold[2]
        first.release()
        assert gc.get_threshold() == held  # the second hub's storm goes on
        second.release()
        assert gc.get_threshold() == threshold
    finally:
        first.release()
        second.release()
