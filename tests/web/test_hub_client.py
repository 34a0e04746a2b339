"""The pages' live connection, made by the npm `centrifuge` SDK (served from web/node_modules at
/vendor/centrifuge.js), in headless Chromium against the real `livesell serve`: a page receives
what is published, recovers what it missed while the hub restarted, refreshes a token that runs
out, shares its connection with other modules, and says so when the SDK is not installed."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.auth import mint_token
from live.tokens import EXPIRED_CLOSE_DELAY_S
from tests.conftest import TEST_SECRET, Servers
from tests.web.conftest import PHONE, ROOM_ROUTES, STORE_ROUTES, LiveServer, running_server
from tests.web.test_browser import Page, _page, _seed_room, _start_drop

pytestmark = pytest.mark.slow

# seconds a short-lived token lives: long enough for the page to keep it (it drops tokens with
# under 5 s left) on a busy machine, short enough for the test
SHORT_TTL_S = 12


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Page]]:
    """Pages opened by a test, closed after it (failing it on any page error)."""
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.close()


def _frames(page: Page) -> list[dict[str, Any]]:
    """Every command the page has written to the hub, decoded (frames may hold several)."""
    sent: list[dict[str, Any]] = page.page.evaluate("() => window.__framesSent")
    return sent


FRAME_SPY = """
(() => {
  window.__framesSent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    for (const line of String(data).split("\\n")) {
      if (line.trim()) window.__framesSent.push(JSON.parse(line));
    }
    return send.call(this, data);
  };
})();
"""


def _spied(pages: list[Page], browser: Any) -> Page:
    page = _page(pages, browser, PHONE)
    page.context.add_init_script(FRAME_SPY)
    return page


def _pin(server: LiveServer, seeded: dict[str, Any]) -> None:
    server.call(
        "POST", f"/api/rooms/{seeded['room_id']}/pin", seeded["host"],
        {"product_id": seeded["product"]["id"]},
    )  # fmt: skip


def test_a_page_connects_through_the_sdk_and_receives_what_is_published(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str
) -> None:
    live_server.need(ROOM_ROUTES)
    seeded = _seed_room(live_server, unique)
    viewer = _spied(pages, browser).open(f"{live_server.base_url}/r/{seeded['room_id']}")
    viewer.wait_connected()
    assert viewer.page.evaluate("() => typeof window.Centrifuge") == "function"
    assert any(call.endswith("/vendor/centrifuge.js") for call in viewer.api_calls)
    frames = _frames(viewer)
    connect = next(f["connect"] for f in frames if "connect" in f)
    assert connect.get("name") == "livesell-web" and not connect.get("token"), "a guest"
    channels = {f["subscribe"]["channel"] for f in frames if "subscribe" in f}
    # the room's events and its chat, on the page's one connection
    assert channels == {f"room:{seeded['room_id']}", f"chat:{seeded['room_id']}"}

    _pin(live_server, seeded)
    assert viewer.wait_text("#pinned-title", re.escape(seeded["product"]["title"])) < 1.0


def test_a_page_recovers_what_it_missed_while_the_hub_restarted(
    servers: Servers, browser: Any, pages: list[Page], unique: str
) -> None:
    with running_server(servers) as first:
        first.need(ROOM_ROUTES, STORE_ROUTES)
        ports = first.ports
        seeded = _seed_room(first, unique)
        room_id = seeded["room_id"]
        drop = _start_drop(first, seeded, quantity=6, per_buyer_limit=3)
        viewer = _spied(pages, browser).open(f"{first.base_url}/r/{room_id}")
        viewer.wait_connected()
        viewer.wait_text("#stock-text", "6 left of 6")
        # the stock can show from the REST snapshot before the room's subscribe is answered;
        # cut before that and the SDK has no position to recover from
        viewer.wait_subscribed(f"room:{room_id}")
        snapshot_loads = sum(f"/api/rooms/{room_id}" in call for call in viewer.api_calls)
        # the page's new sockets fail until the test lets them through, so it cannot reconnect
        # before the events below are published
        viewer.page.evaluate("() => { window.__blockHub = true; }")
    viewer.wait_text("#hub-state", "Reconnecting")

    with running_server(servers, ports=ports) as second:
        _pin(second, seeded)
        second.call(
            "POST", f"/api/drops/{drop['id']}/buy", second.token(f"restart-{unique}"),
            {"quantity": 2}, headers={"Idempotency-Key": f"restart-{unique}"},
        )  # fmt: skip
        viewer.page.evaluate("() => { window.__blockHub = false; }")
        viewer.wait_connected(timeout_s=25)
        viewer.wait_text("#pinned-title", re.escape(seeded["product"]["title"]))
        viewer.wait_text("#stock-text", "4 left of 6")
        recovering = [
            f["subscribe"] for f in _frames(viewer) if f.get("subscribe", {}).get("recover")
        ]
        assert recovering and recovering[-1]["channel"] == f"room:{room_id}"
        reloads = sum(f"/api/rooms/{room_id}" in call for call in viewer.api_calls)
        assert reloads == snapshot_loads, "recovered from the hub, not by reloading the snapshot"


def _short_token(sub: str) -> str:
    return mint_token(TEST_SECRET, sub, ["viewer"], ttl_s=SHORT_TTL_S)


def _past_expiry(started: float) -> None:
    """Sleep until the hub would have closed a session that did not refresh (3005)."""
    time.sleep(max(0.0, started + SHORT_TTL_S + EXPIRED_CLOSE_DELAY_S + 2 - time.monotonic()))


def test_a_page_whose_token_runs_out_gets_a_new_one_and_stays_connected(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str
) -> None:
    live_server.need(ROOM_ROUTES)
    seeded = _seed_room(live_server, unique)
    started = time.monotonic()
    token = _short_token(f"brief-{unique}")
    viewer = _spied(pages, browser).open(
        f"{live_server.base_url}/r/{seeded['room_id']}#token={token}"
    )
    viewer.wait_connected()
    connect = next(f["connect"] for f in _frames(viewer) if "connect" in f)
    assert connect.get("token") == token, "the page connected with the token of its link"
    _past_expiry(started)

    # dev mode: the page minted a new token for the same user and sent it with `refresh`
    # (reading the frames first also lets Playwright deliver the request events it holds)
    refreshed = [f["refresh"]["token"] for f in _frames(viewer) if "refresh" in f]
    assert refreshed and refreshed[-1] != token
    assert any(call.startswith("POST") and "/api/dev/token" in call for call in viewer.api_calls)
    stored = viewer.page.evaluate("() => localStorage.getItem('livesell.token.viewer')")
    assert stored == refreshed[-1]
    payload = json.loads(_b64(stored.split(".")[1]))
    assert payload["sub"] == f"brief-{unique}" and payload["roles"] == ["viewer"]
    # one connection all along: the hub never closed it as expired
    assert viewer.page.evaluate("() => window.__sockets.length") == 1
    assert viewer.page.get_attribute("#hub-state", "data-state") == "connected"
    _pin(live_server, seeded)
    viewer.wait_text("#pinned-title", re.escape(seeded["product"]["title"]))


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_outside_dev_mode_a_page_takes_a_fresher_stored_token_or_says_its_session_expired(
    servers: Servers, browser: Any, pages: list[Page], unique: str
) -> None:
    with running_server(servers, LIVESELL_DEV="0") as server:
        server.need(ROOM_ROUTES)
        seeded = _seed_room(server, unique)
        url = f"{server.base_url}/r/{seeded['room_id']}"
        started = time.monotonic()
        stale = _spied(pages, browser).open(f"{url}#token={_short_token(f'stale-{unique}')}")
        kept = _spied(pages, browser).open(f"{url}#token={_short_token(f'kept-{unique}')}")
        stale.wait_connected()
        kept.wait_connected()
        # what an integrating app does: hand the page a fresh token (here: as a new link would)
        fresh = mint_token(TEST_SECRET, f"kept-{unique}", ["viewer"], ttl_s=3600)
        kept.page.evaluate("(token) => localStorage.setItem('livesell.token.viewer', token)", fresh)
        stale.wait_text("#hub-state", "Session expired", timeout_s=SHORT_TTL_S + 5)
        _past_expiry(started)
        assert [f["refresh"]["token"] for f in _frames(kept) if "refresh" in f] == [fresh]
        assert not [f for f in _frames(stale) if "refresh" in f]
        assert not any("/api/dev/token" in call for call in stale.api_calls + kept.api_calls)
        assert kept.page.get_attribute("#hub-state", "data-state") == "connected"
        assert kept.page.evaluate("() => window.__sockets.length") == 1
        _pin(server, seeded)
        kept.wait_text("#pinned-title", re.escape(seeded["product"]["title"]))


def test_other_modules_of_the_page_share_its_connection(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str
) -> None:
    live_server.need(ROOM_ROUTES)
    seeded = _seed_room(live_server, unique)
    other = _seed_room(live_server, f"{unique}b")
    viewer = _page(pages, browser, PHONE).open(f"{live_server.base_url}/r/{seeded['room_id']}")
    viewer.wait_connected()
    # as a chat panel would: join the page's connection and subscribe to a channel of its own
    viewer.page.evaluate(
        """async (channel) => {
          const { pageHub } = await import("/static/js/live.js");
          const hub = await pageHub();
          window.__shared = { state: hub.client.state, events: [] };
          hub.subscribe(channel, { onPublication: (data) => window.__shared.events.push(data) });
        }""",
        f"room:{other['room_id']}",
    )
    assert viewer.page.evaluate("() => window.__shared.state") == "connected"
    viewer.wait_subscribed(f"room:{other['room_id']}")
    _pin(live_server, other)
    viewer.page.wait_for_function(
        "() => window.__shared.events.some((e) => e.type === 'card.pinned')", timeout=5000
    )
    assert viewer.page.evaluate("() => window.__sockets.length") == 1, "one connection"


def test_without_the_sdk_a_page_says_so_and_still_follows_the_room(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str
) -> None:
    live_server.need(ROOM_ROUTES)
    seeded = _seed_room(live_server, unique)
    viewer = _page(pages, browser, PHONE)
    # as when `make serve` ran without npm: the SDK route answers 404
    viewer.page.route(
        "**/vendor/centrifuge.js",
        lambda route: route.fulfill(status=404, content_type="application/json", body="{}"),
    )
    viewer.open(f"{live_server.base_url}/r/{seeded['room_id']}")
    viewer.wait_text("#hub-state", "No live updates")
    viewer.wait_text("#room-title", f"Tea tasting {unique}")
    assert viewer.page.evaluate("() => window.__sockets.length") == 0
    _pin(live_server, seeded)
    # the snapshot is reloaded every few seconds instead
    viewer.wait_text("#pinned-title", re.escape(seeded["product"]["title"]), timeout_s=8)
