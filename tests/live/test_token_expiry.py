"""Connection tokens expire after connect too: the connect reply says when, the client refreshes
with the `refresh` command (both stock SDKs do it on their own through `getToken`), and a
session that does not is disconnected with 3005 and gets no more private events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from core.auth import mint_token
from core.events import Event, dashboard_channel
from core.resources import Resources
from core.settings import Settings
from live.tokens import Expiries
from tests.live.conftest import RawClient, RunningHub
from tests.live.sdk import NodeViewer, PythonViewer, node_available

Opener = Callable[..., Any]
TOKEN_TTL_S = 2
GRACE_S = 1.0  # the hub's grace after `exp`, shortened for the tests (10 s in production)


class StatsChanged(Event, tag="stats.changed"):
    n: int


@pytest.fixture
def short_grace(hub: RunningHub) -> RunningHub:
    hub.hub.expiries.close_delay_s = GRACE_S
    return hub


def _token(settings: Settings, sub: str = "alice", ttl_s: int = TOKEN_TTL_S) -> str:
    return mint_token(settings.secret, sub, ["distributor"], ttl_s=ttl_s)


async def _publish(resources: Resources, n: int, user: str = "alice") -> None:
    await resources.publisher.publish(dashboard_channel(user), StatsChanged(n=n))


async def _past_expiry() -> None:
    """Long enough for a token minted now to have run out, grace and sweep included."""
    await asyncio.sleep(TOKEN_TTL_S + GRACE_S + 1.5)


async def _closed_with(viewer: RawClient, timeout: float) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await viewer.receive(timeout=timeout)
    return viewer.ws.close_code


async def test_connect_reply_says_when_the_token_expires(
    raw_client: Opener, settings: Settings
) -> None:
    short: RawClient = await raw_client()
    result = (await short.connect(_token(settings, ttl_s=60)))["connect"]
    assert result["expires"] is True and 58 <= result["ttl"] <= 60

    forever: RawClient = await raw_client()
    lasting = jwt.encode({"sub": "alice"}, settings.secret, "HS256")  # no exp
    assert "expires" not in (await forever.connect(lasting))["connect"]
    guest: RawClient = await raw_client()
    assert "expires" not in (await guest.connect())["connect"]


async def test_a_refreshed_session_keeps_its_private_channel(
    short_grace: RunningHub, raw_client: Opener, settings: Settings, resources: Resources
) -> None:
    viewer: RawClient = await raw_client()
    await viewer.connect(_token(settings))
    assert "subscribe" in await viewer.subscribe("dashboard#alice")
    refreshed = await viewer.reply(await viewer.send(refresh={"token": _token(settings, ttl_s=60)}))
    assert refreshed["refresh"]["expires"] is True and 58 <= refreshed["refresh"]["ttl"] <= 60
    await _past_expiry()
    await _publish(resources, 1)
    pub = await viewer.publication()
    assert pub["channel"] == "dashboard#alice" and pub["pub"]["data"]["n"] == 1

    # a token without exp lifts the expiry altogether
    lasting = jwt.encode({"sub": "alice"}, settings.secret, "HS256")
    assert (await viewer.reply(await viewer.send(refresh={"token": lasting})))["refresh"] == {}


async def test_a_session_that_does_not_refresh_is_closed_3005(
    short_grace: RunningHub, raw_client: Opener, settings: Settings, resources: Resources
) -> None:
    viewer: RawClient = await raw_client()
    bystander: RawClient = await raw_client()
    await viewer.connect(_token(settings))
    await bystander.connect(_token(settings, ttl_s=600))
    for raw in (viewer, bystander):
        assert "subscribe" in await raw.subscribe("dashboard#alice")
    started = time.monotonic()
    assert await _closed_with(viewer, timeout=TOKEN_TTL_S + GRACE_S + 3) == 3005
    assert time.monotonic() - started >= TOKEN_TTL_S + GRACE_S - 1  # not before exp + grace
    feed = short_grace.hub.feeds["dashboard#alice"]
    assert len(feed) == 1, "only the bystander still receives the dashboard"
    await _publish(resources, 2)
    assert (await bystander.publication())["pub"]["data"]["n"] == 2


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", 3501),  # no token: bad request
        ("not-a-jwt", 3500),
        ("expired", 3005),
        ("bob's", 3500),  # another user's token
    ],
)
async def test_refresh_with_a_bad_token_closes_as_centrifugo_does(
    raw_client: Opener, settings: Settings, token: str, code: int
) -> None:
    tokens = {
        "expired": jwt.encode(
            {"sub": "alice", "exp": int(time.time()) - 600}, settings.secret, "HS256"
        ),
        "bob's": _token(settings, "bob", ttl_s=60),
    }
    viewer: RawClient = await raw_client()
    await viewer.connect(_token(settings, ttl_s=60))
    await viewer.send(refresh={"token": tokens.get(token, token)})
    assert await _closed_with(viewer, timeout=5) == code


async def test_a_guest_cannot_refresh_into_a_user(raw_client: Opener, settings: Settings) -> None:
    guest: RawClient = await raw_client()
    await guest.connect()
    await guest.send(refresh={"token": _token(settings, ttl_s=60)})
    assert await _closed_with(guest, timeout=5) == 3500


async def _events_for(read: Callable[[], Any], seconds: float) -> list[dict[str, Any]]:
    """Every event reported within `seconds`."""
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            seen.append(await asyncio.wait_for(read(), left))
        except TimeoutError:
            break
    return seen


async def test_python_sdk_refreshes_through_get_token_and_keeps_receiving(
    short_grace: RunningHub, settings: Settings, resources: Resources
) -> None:
    asked = 0

    async def get_token() -> str:
        nonlocal asked
        asked += 1
        return _token(settings)

    viewer = PythonViewer(short_grace.url, "dashboard#alice", _token(settings), get_token)
    await viewer.start()
    try:
        await viewer.next("subscribed")
        await asyncio.sleep(2 * TOKEN_TTL_S + GRACE_S + 1)  # two tokens' lifetimes and more
        await _publish(resources, 3)
        assert (await viewer.next("publication"))["data"]["n"] == 3
        assert asked >= 2, "the SDK refreshed at each ttl"
        assert viewer.client.state.value == "connected"
        events = await _events_for(viewer.events.queue.get, 0.5)  # whatever came meanwhile
        assert not [e for e in events if e["event"] in ("connecting", "disconnected")]
    finally:
        await viewer.disconnect()


async def test_python_sdk_without_a_new_token_is_closed_3005(
    short_grace: RunningHub, settings: Settings, resources: Resources
) -> None:
    new_token_ready = asyncio.Event()

    async def get_token() -> str:
        await new_token_ready.wait()  # the app has no new token to give, for now
        return _token(settings, ttl_s=60)

    viewer = PythonViewer(short_grace.url, "dashboard#alice", _token(settings), get_token)
    await viewer.start()
    try:
        await viewer.next("subscribed")
        closed = await viewer.next("connecting", timeout=TOKEN_TTL_S + GRACE_S + 5)
        assert closed["code"] == 3005
        await _publish(resources, 4)
        events = await _events_for(viewer.events.queue.get, 1.5)
        assert not [e for e in events if e["event"] == "publication"]
        assert "dashboard#alice" not in short_grace.hub.feeds
        # its old token is refused (109), so it asks again; with a new one it is back, and
        # recovers what it missed
        new_token_ready.set()
        again = await viewer.next("subscribed")
        assert again["wasRecovering"] is True and again["recovered"] is True
        assert (await viewer.next("publication"))["data"]["n"] == 4
    finally:
        new_token_ready.set()
        await viewer.disconnect()


node_only = pytest.mark.skipif(
    not node_available(), reason="node or tests/js/node_modules missing (make test installs it)"
)


@node_only
async def test_node_sdk_refreshes_through_get_token_and_keeps_receiving(
    short_grace: RunningHub, settings: Settings, resources: Resources
) -> None:
    viewer = await NodeViewer.start(
        short_grace.url, "dashboard#alice", _token(settings), get_token=True
    )
    try:
        await viewer.next("subscribed")
        seen: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        until = loop.time() + 2 * TOKEN_TTL_S + GRACE_S + 1  # two tokens' lifetimes and more
        while (left := until - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(viewer.read(), left)
            except TimeoutError:
                break
            seen.append(event)
            if event["event"] == "token_wanted":
                await viewer.give_token(_token(settings))
        assert sum(e["event"] == "token_wanted" for e in seen) >= 2
        assert not [e for e in seen if e["event"] in ("disconnected", "client_error")]
        assert not [e for e in seen if e["event"] == "connecting" and e["code"] != 0]
        await _publish(resources, 5)
        assert (await viewer.next("publication"))["data"]["n"] == 5
    finally:
        await viewer.stop()


@node_only
async def test_node_sdk_without_a_new_token_is_closed_3005(
    short_grace: RunningHub, settings: Settings, resources: Resources
) -> None:
    viewer = await NodeViewer.start(
        short_grace.url, "dashboard#alice", _token(settings), get_token=True
    )
    try:
        await viewer.next("subscribed")
        await viewer.next("token_wanted", timeout=TOKEN_TTL_S + 2)  # never answered
        closed = await viewer.next("connecting", timeout=GRACE_S + 4)
        assert closed["code"] == 3005
        await _publish(resources, 6)
        events = await _events_for(viewer.read, 1.5)
        assert not [e for e in events if e["event"] == "publication"]
        assert "dashboard#alice" not in short_grace.hub.feeds
        # its old token is refused (109), so it asks again; with a new one it is back, and
        # recovers what it missed
        if not [e for e in events if e["event"] == "token_wanted"]:
            await viewer.next("token_wanted", timeout=5)
        await viewer.give_token(_token(settings, ttl_s=60))
        again = await viewer.next("subscribed")
        assert again["wasRecovering"] is True and again["recovered"] is True
        assert (await viewer.next("publication"))["data"]["n"] == 6
    finally:
        await viewer.stop()


class _Held:
    """Stands in for a session: all the expiry heap touches is `expiry` (and a weak ref)."""

    __slots__ = ("expiry", "__weakref__")

    def __init__(self) -> None:
        self.expiry: object = None


def test_one_heap_of_deadlines_stays_as_small_as_the_sessions_it_tracks() -> None:
    expiries = Expiries(close_delay_s=10)
    sessions = [_Held() for _ in range(1000)]
    for exp in range(100, 120):  # every session refreshes twenty times
        for session in sessions:
            expiries.track(session, exp)
    assert len(expiries) == 1000
    assert expiries.held <= 2 * 1000 + 64, "superseded deadlines are compacted away"
    for session in sessions[:500]:  # half leave
        expiries.discard(session)
    del session
    sessions = sessions[500:]
    assert len(expiries) == 500
    assert expiries.held <= 2 * 500 + 64
    assert expiries.due(128.9) == []
    due = expiries.due(129.0)  # the last exp (119) plus the grace
    assert len(due) == 500 and set(map(id, due)) == set(map(id, sessions))
    assert expiries.due(1e12) == [] and len(expiries) == 0
