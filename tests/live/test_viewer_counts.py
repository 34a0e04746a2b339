"""Viewer counts over many hub nodes: the total follows every node's report and a dead node's
count leaves it, and one room announces its total at most once per `CADENCE.min_ms` however
many nodes report (each announcement reaches every node: N announcing nodes would make N^2
messages a second), less often the more viewers it has (each announcement is a write to every
viewer)."""

from __future__ import annotations

import asyncio
import time

from core.resources import Resources
from live.viewers import CADENCE, Cadence, ViewerCounts, total_viewers

NODES = 50


async def test_fifty_nodes_announce_a_room_once_a_second(resources: Resources) -> None:
    nodes = [ViewerCounts(resources.redis, f"node-{i}") for i in range(NODES)]
    announced = []
    for round_ in range(3):
        # every node's count changes, so every report moves the total (1,275 to 1,375: a room
        # this size may announce every `CADENCE.min_ms`)
        reports = await asyncio.gather(
            *(node.report({"7": round_ + 1 + i}) for i, node in enumerate(nodes))
        )
        announced.append(sum(r["7"].announce for r in reports))
        expected = sum(round_ + 1 + i for i in range(NODES))
        assert await total_viewers(resources.redis, 7) == expected
        assert max(r["7"].total for r in reports) == expected
        await asyncio.sleep(CADENCE.min_ms / 1000)
    assert announced == [1, 1, 1]


async def test_a_total_held_back_is_announced_by_the_next_report(resources: Resources) -> None:
    a, b = ViewerCounts(resources.redis, "a"), ViewerCounts(resources.redis, "b")
    first = (await a.report({"7": 3}))["7"]
    assert (first.total, first.announce, first.pending) == (3, True, False)
    held = (await b.report({"7": 2}))["7"]
    assert (held.total, held.announce, held.pending) == (5, False, True)
    await asyncio.sleep(CADENCE.min_ms / 1000)
    later = (await b.report({"7": 1}))["7"]
    assert (later.total, later.announce, later.pending) == (4, True, False)
    # b's viewers left before 5 was ever announced: back to the total announced, nothing to say
    held = (await b.report({"7": 2}))["7"]
    assert (held.total, held.announce, held.pending) == (5, False, True)
    gone = (await b.report({"7": 0}))["7"]
    assert (gone.total, gone.announce, gone.pending) == (3, False, True)


async def test_a_dead_nodes_count_leaves_the_total(resources: Resources) -> None:
    alive = ViewerCounts(resources.redis, "alive", stale_after_ms=300)
    dead = ViewerCounts(resources.redis, "dead", stale_after_ms=300)
    await dead.report({"7": 40})
    assert (await alive.report({"7": 2}))["7"].total == 42
    await asyncio.sleep(0.4)  # `dead` stopped reporting
    assert (await alive.report({"7": 2}))["7"].total == 2
    assert await total_viewers(resources.redis, 7) == 2
    # a node back from the dead counts again
    assert (await dead.report({"7": 5}))["7"].total == 7


async def test_a_bigger_room_announces_its_moving_total_less_often(
    resources: Resources,
) -> None:
    # every total * 1000 / 10,000 ms, within [100, 600] ms: 500 viewers every 100 ms, 4,000
    # every 400 ms, 50,000 every 600 ms (not 5 s)
    node = ViewerCounts(resources.redis, "n", cadence=Cadence(100, 600, 10_000))
    rooms = {"7": 500, "8": 4_000, "9": 50_000}
    every_ms = {"7": 100, "8": 400, "9": 600}
    announced = {room: 0 for room in rooms}
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        rooms = {room: count + 1 for room, count in rooms.items()}  # every total moves
        reports = await node.report(rooms)
        for room, report in reports.items():
            assert report.total == rooms[room]
            assert report.pending != report.announce  # a total not announced is still to be
            announced[room] += report.announce
        await asyncio.sleep(0.02)
    elapsed_ms = (time.monotonic() - started) * 1000
    for room, every in every_ms.items():
        # Redis's clock decides; the reports span less than `elapsed_ms` of it
        assert 2 <= announced[room] <= 1 + elapsed_ms // every, (room, announced)
    assert announced["7"] > announced["8"] > announced["9"]
