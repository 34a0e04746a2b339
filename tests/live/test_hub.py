"""The hub with hand-written protocol frames: replies, live delivery, batching, coalescing,
recovery, permissions, viewer counts and shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, ClassVar

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from core.auth import mint_token
from core.events import Event, room_channel
from core.resources import Resources
from core.settings import Settings
from live.history import StreamState
from live.hub import REDIS_READS_IN_FLIGHT
from tests.live.conftest import RawClient, Room, RunningHub, hub_resources, open_raw, start_hub

Opener = Callable[..., Any]


class StockChanged(Event, tag="stock.changed"):
    """Stands in for storefront's latest-value event: the hub relays any room event."""

    coalesce: ClassVar[bool] = True
    drop_id: str
    remaining: int


class DropStarted(Event, tag="drop.started"):
    drop_id: str


async def _pin(client: httpx.AsyncClient, room: Room, n: int) -> None:
    response = await client.post(
        f"/api/rooms/{room.id}/pin", json={"product_id": room.products[n]}, headers=room.host
    )
    assert response.status_code == 200, response.text


async def test_connect_and_subscribe_reply_with_position_and_snapshot(
    raw_client: Opener, room: Room, client: httpx.AsyncClient
) -> None:
    await _pin(client, room, 0)
    viewer: RawClient = await raw_client()
    connected = await viewer.connect()
    assert connected["connect"]["ping"] == 25 and connected["connect"]["pong"] is True
    assert connected["connect"]["client"]
    reply = await viewer.subscribe(f"room:{room.id}")
    result = reply["subscribe"]
    assert result["recoverable"] is True and result["epoch"] and result["offset"] == 1
    assert "id" not in result, "SDKs route pushes by channel name"
    snapshot = result["data"]
    assert snapshot["room"]["id"] == room.id and snapshot["pinned"]["id"] == room.products[0]
    assert set(snapshot) == {
        "room",
        "pinned",
        "drop",
        "server_time",
        "viewers",
        "coupons",
        "reservations",
    }


async def test_host_actions_reach_every_viewer_in_order(
    raw_client: Opener, room: Room, client: httpx.AsyncClient
) -> None:
    viewers = [await raw_client() for _ in range(3)]
    for viewer in viewers:
        await viewer.connect()
        await viewer.subscribe(f"room:{room.id}")
    await client.post(f"/api/rooms/{room.id}/live", headers=room.host)
    await _pin(client, room, 1)
    await client.delete(f"/api/rooms/{room.id}/pin", headers=room.host)
    for viewer in viewers:
        got = [await viewer.publication() for _ in range(3)]
        assert [p["pub"]["data"]["type"] for p in got] == [
            "room.live",
            "card.pinned",
            "card.unpinned",
        ]
        offsets = [p["pub"]["offset"] for p in got]
        assert offsets == sorted(offsets) and len(set(offsets)) == 3
        assert all(p["channel"] == f"room:{room.id}" for p in got)


async def test_events_within_one_tick_share_a_frame_and_latest_values_coalesce(
    room: Room, resources: Resources
) -> None:
    # a long tick so the five publications surely fall into one, however busy the machine
    running, stop = await start_hub(hub_resources(resources, hub_flush_ms=300))
    try:
        viewer = await open_raw(running.url)
        await viewer.connect()
        await viewer.subscribe(f"room:{room.id}")
        channel = room_channel(room.id)
        await resources.publisher.publish(channel, DropStarted(drop_id="7"))
        for remaining in (5, 4, 3, 2):
            await resources.publisher.publish(
                channel, StockChanged(drop_id="7", remaining=remaining)
            )
        frame = await asyncio.wait_for(viewer.ws.recv(), 5)
        messages = [line for line in str(frame).split("\n") if '"pub"' in line]
        # one frame: the ordinary event, and only the latest stock value
        assert len(messages) == 2, frame
        assert '"drop.started"' in messages[0]
        assert '"remaining":2' in messages[1] and '"offset":5' in messages[1]
        await viewer.ws.close()
    finally:
        await stop()


async def test_recovery_returns_exactly_the_missed_publications(
    hub: RunningHub, raw_client: Opener, room: Room, client: httpx.AsyncClient
) -> None:
    first: RawClient = await raw_client()
    await first.connect()
    position = (await first.subscribe(f"room:{room.id}"))["subscribe"]
    await _pin(client, room, 0)
    seen = await first.publication()
    await first.ws.close()

    await _pin(client, room, 1)
    await client.delete(f"/api/rooms/{room.id}/pin", headers=room.host)
    await client.post(f"/api/rooms/{room.id}/live", headers=room.host)

    again: RawClient = await raw_client()
    await again.connect()
    reply = await again.subscribe(
        f"room:{room.id}", recover=True, offset=seen["pub"]["offset"], epoch=position["epoch"]
    )
    result = reply["subscribe"]
    assert result["was_recovering"] is True and result["recovered"] is True
    recovered = result["publications"]
    # viewer counts may interleave (latest-value events); every host action is there, in order
    assert [p["data"]["type"] for p in recovered if p["data"]["type"] != "viewers.changed"] == [
        "card.pinned",
        "card.unpinned",
        "room.live",
    ]
    offsets = [p["offset"] for p in recovered]
    assert offsets[0] > seen["pub"]["offset"] and offsets == sorted(offsets)
    assert result["offset"] == offsets[-1]
    # the viewer keeps its state and applies what it missed: no snapshot to load again
    assert "data" not in result

    # and the stream goes on live after the recovered part, without duplicates
    await client.delete(f"/api/rooms/{room.id}/pin", headers=room.host)  # nothing pinned: no event
    await _pin(client, room, 2)
    live = await again.publication()
    assert live["pub"]["offset"] > result["offset"] and live["pub"]["data"]["type"] == "card.pinned"


async def test_recoveries_from_one_position_share_a_read_waiting_for_its_turn(
    hub: RunningHub,
    raw_client: Opener,
    room: Room,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a node dies its viewers all recover from the same position at once: those queued
    behind the hub's limit of Redis reads in flight share one read, and each gets it all."""
    viewer: RawClient = await raw_client()
    await viewer.connect()
    position = (await viewer.subscribe(f"room:{room.id}"))["subscribe"]
    await _pin(client, room, 0)
    await _pin(client, room, 1)
    pins = [(await viewer.publication())["pub"]["offset"] for _ in range(2)]

    running = hub.hub
    reads = 0
    read = running._reader.state

    async def counted(channel: str, **kwargs: Any) -> StreamState:
        nonlocal reads
        reads += 1
        return await read(channel, **kwargs)

    monkeypatch.setattr(running._reader, "state", counted)
    feed = running.feeds[f"room:{room.id}"]
    since = (position.get("offset", 0), position["epoch"])  # 0 is omitted, as every default
    recoveries = REDIS_READS_IN_FLIGHT + 100
    states = await asyncio.gather(*(running._read_recovery(feed, since) for _ in range(recoveries)))
    # the first 64 read at once; the next queues its read and the 99 after it wait for that one
    assert reads == REDIS_READS_IN_FLIGHT + 1
    queued = states[REDIS_READS_IN_FLIGHT]
    assert all(state is queued for state in states[REDIS_READS_IN_FLIGHT:])

    def pinned(state: StreamState) -> list[int]:
        assert state.missed is not None  # recovered
        return [e.offset for e in state.missed if b"card.pinned" in e.data]

    assert all(pinned(state) == pins for state in states)

    # a read that has begun is not joined: with reads free, three recoveries make three
    later = await asyncio.gather(*(running._read_recovery(feed, since) for _ in range(3)))
    assert reads == REDIS_READS_IN_FLIGHT + 4
    assert all(pinned(state) == pins for state in later)


async def test_recovery_is_refused_not_partial(
    resources: Resources, room: Room, client: httpx.AsyncClient
) -> None:
    running, stop = await start_hub(hub_resources(resources, hub_history_size=2))
    small_history = hub_resources(resources, hub_history_size=2)
    from core.events import Publisher

    publisher = Publisher(resources.redis, history_size=2, ttl_s=60)
    try:
        viewer = await open_raw(running.url)
        await viewer.connect()
        epoch = (await viewer.subscribe(f"room:{room.id}"))["subscribe"]["epoch"]
        for n in range(6):
            await publisher.publish(room_channel(room.id), DropStarted(drop_id=str(n)))
        late = await open_raw(running.url)
        await late.connect()
        gap = await late.subscribe(f"room:{room.id}", recover=True, offset=1, epoch=epoch)
        assert gap["subscribe"]["was_recovering"] is True
        assert gap["subscribe"].get("recovered", False) is False
        assert gap["subscribe"].get("publications", []) == []
        assert gap["subscribe"]["offset"] >= 6 and gap["subscribe"]["data"]["room"]["id"] == room.id

        other = await open_raw(running.url)
        await other.connect()
        wrong_epoch = await other.subscribe(
            f"room:{room.id}", recover=True, offset=5, epoch="not-this-one"
        )
        assert wrong_epoch["subscribe"].get("recovered", False) is False

        strict = await open_raw(running.url)
        await strict.connect()
        refused = await strict.subscribe(
            f"room:{room.id}", recover=True, offset=1, epoch=epoch, flag=3
        )
        assert refused["error"]["code"] == 112
        assert small_history.settings.hub_history_size == 2
        for raw in (viewer, late, other, strict):
            await raw.ws.close()
    finally:
        await stop()


async def test_channel_permissions(raw_client: Opener, settings: Settings, room: Room) -> None:
    guest: RawClient = await raw_client()
    await guest.connect()
    denied = await guest.subscribe("dashboard#alice")
    assert denied["error"]["code"] == 103
    assert (await guest.subscribe("nonsense"))["error"]["code"] == 102
    assert (await guest.subscribe("room:12abc"))["error"]["code"] == 102
    assert (await guest.subscribe("room:999999"))["error"]["code"] == 102, "no such room"
    assert "subscribe" in await guest.subscribe(f"room:{room.id}")
    assert (await guest.subscribe(f"room:{room.id}"))["error"]["code"] == 105

    alice: RawClient = await raw_client()
    await alice.connect(mint_token(settings.secret, "alice", ["distributor"]))
    assert "subscribe" in await alice.subscribe("dashboard#alice")
    assert (await alice.subscribe("dashboard#bob"))["error"]["code"] == 103


async def test_bad_tokens(raw_client: Opener, settings: Settings) -> None:
    forged: RawClient = await raw_client()
    await forged.send(connect={"token": "not-a-jwt"})
    with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
        await forged.receive(timeout=3)
    assert forged.ws.close_code == 3500

    expired: RawClient = await raw_client()
    import jwt

    token = jwt.encode({"sub": "a", "exp": int(time.time()) - 600}, settings.secret, "HS256")
    assert (await expired.connect(token))["error"]["code"] == 109


async def test_viewer_counts_reach_the_room(
    raw_client: Opener, room: Room, client: httpx.AsyncClient, settings: Settings
) -> None:
    """Viewers are counted; the host's console (and an admin's look) is not."""
    from core.auth import mint_token

    host: RawClient = await raw_client()
    await host.connect(mint_token(settings.secret, "alice", ["host"]))
    await host.subscribe(f"room:{room.id}")
    watcher: RawClient = await raw_client()
    await watcher.connect()
    await watcher.subscribe(f"room:{room.id}")
    others = [await raw_client() for _ in range(2)]
    for other in others:
        await other.connect()
        await other.subscribe(f"room:{room.id}")
    deadline = time.monotonic() + 5
    count = None
    while count != 3:
        assert time.monotonic() < deadline, f"viewers.changed never said 3 (last {count})"
        pub = await watcher.publication(timeout=5, skip=())
        if pub["pub"]["data"]["type"] == "viewers.changed":
            count = pub["pub"]["data"]["viewers"]
    assert (await client.get(f"/api/rooms/{room.id}")).json()["viewers"] == 3
    await others[0].ws.close()
    while True:
        pub = await watcher.publication(timeout=5, skip=())
        if pub["pub"]["data"]["type"] == "viewers.changed":
            assert pub["pub"]["data"]["viewers"] == 2
            break


async def test_shutdown_closes_with_a_reconnect_code(resources: Resources, room: Room) -> None:
    running, stop = await start_hub(resources)
    viewer = await open_raw(running.url)
    await viewer.connect()
    await viewer.subscribe(f"room:{room.id}")
    await stop()
    with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
        while True:
            await viewer.receive(timeout=5)
    assert viewer.ws.close_code == 3001


async def test_unknown_path_is_404(hub: RunningHub) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{hub.port}/elsewhere")
    assert response.status_code == 404


async def test_viewer_counts_do_not_push_a_sale_out_of_recovery_range(
    hub: RunningHub, raw_client: Opener, room: Room, resources: Resources
) -> None:
    """A big room publishes a viewer count every tick: 5,000 of them after a sale, five times
    the history size, still leave the sale recoverable, with only the latest count."""
    from datetime import UTC, datetime

    from live.events import ViewersChanged
    from storefront.events import OrderPlaced

    channel = room_channel(room.id)
    viewer: RawClient = await raw_client()
    await viewer.connect()
    position = (await viewer.subscribe(channel))["subscribe"]
    await viewer.ws.close()
    assert resources.publisher.history_size == hub.hub.settings.hub_history_size == 1000

    sale = OrderPlaced(
        drop_id="7", product_id="3", buyer="a***", quantity=1, placed_at=datetime.now(UTC)
    )
    await resources.publisher.publish(channel, sale)
    counts = [(channel, ViewersChanged(room_id=str(room.id), viewers=n)) for n in range(5000)]
    for start in range(0, len(counts), 500):
        await resources.publisher.publish_many(counts[start : start + 500])

    again: RawClient = await raw_client()
    await again.connect()
    reply = await again.subscribe(
        channel, recover=True, offset=position.get("offset", 0), epoch=position["epoch"]
    )
    result = reply["subscribe"]
    assert result["recovered"] is True and "data" not in result
    missed = [(p["data"]["type"], p["data"].get("viewers")) for p in result["publications"]]
    assert missed == [("order.placed", None), ("viewers.changed", 4999)]
    last = result["publications"][-1]["offset"]
    assert result["offset"] == last >= position.get("offset", 0) + 5001
    # the counts took no history entries: the stream still has room for 999 more sales
    assert await resources.redis.xlen(f"{{{channel}}}:history") <= 1


async def test_a_recovering_client_gets_the_current_latest_values_once(
    hub: RunningHub, raw_client: Opener, room: Room, resources: Resources
) -> None:
    from storefront.events import StockChanged as DropStock

    def stock(drop: str, remaining: int) -> DropStock:
        return DropStock(drop_id=drop, quantity=10, remaining=remaining, sold=0, held=0)

    channel = room_channel(room.id)
    viewer: RawClient = await raw_client()
    await viewer.connect()
    position = (await viewer.subscribe(channel))["subscribe"]
    await viewer.ws.close()

    publish = resources.publisher.publish
    await publish(channel, stock("7", 5))
    await publish(channel, stock("8", 3))
    started, _ = await publish(channel, DropStarted(drop_id="9"))
    await publish(channel, stock("7", 4))
    top, _ = await publish(channel, stock("9", 10))

    async def recover(offset: int) -> dict[str, Any]:
        client: RawClient = await raw_client()
        await client.connect()
        reply = await client.subscribe(
            channel, recover=True, offset=offset, epoch=position["epoch"]
        )
        await client.ws.close()
        return reply["subscribe"]  # type: ignore[no-any-return]

    def missed(result: dict[str, Any]) -> list[tuple[str, str, int | None]]:
        return [
            (p["data"]["type"], p["data"]["drop_id"], p["data"].get("remaining"))
            for p in result["publications"]
            if p["data"]["type"] != "viewers.changed"
        ]

    result = await recover(position.get("offset", 0))
    assert result["recovered"] is True and result["offset"] >= top
    # each drop's current stock once, in the order the values were published
    assert missed(result) == [
        ("stock.changed", "8", 3),
        ("drop.started", "9", None),
        ("stock.changed", "7", 4),
        ("stock.changed", "9", 10),
    ]
    offsets = [p["offset"] for p in result["publications"]]
    assert offsets == sorted(set(offsets))
    # the values were kept beside the history, not in it
    assert await resources.redis.xlen(f"{{{channel}}}:history") == 1
    # a client that saw the sale start misses only what came after it
    after = await recover(started)
    assert after["recovered"] is True
    assert missed(after) == [("stock.changed", "7", 4), ("stock.changed", "9", 10)]
