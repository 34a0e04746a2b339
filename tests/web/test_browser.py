"""The three pages in headless Chromium against the real `livesell serve` (API + hub + worker).

What a person would notice: the host pins and starts a drop and viewers see it within a second;
a viewer buys and pays and the stock bar, the tickers and the credited distributor's numbers
move without a reload; a reload mid-drop shows the same state; a dropped connection recovers.
Screenshots of every page at phone and desktop width are saved under test-artifacts/.
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from tests.conftest import Servers
from tests.web.conftest import (
    ATTRIBUTION_ROUTES,
    DESKTOP,
    PHONE,
    ROOM_ROUTES,
    STORE_ROUTES,
    LiveServer,
    running_server,
)

pytestmark = pytest.mark.slow

LIVE_WITHIN_S = 1.0
# Tracks every WebSocket the page opens; `__blockHub = true` makes new ones fail at once, as when
# the network is gone, so a test can cut the hub connection and hold it down.
SOCKET_SPY = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__blockHub = false;
  window.WebSocket = function (url, protocols) {
    if (window.__blockHub) throw new DOMException("blocked by the test", "NetworkError");
    const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
    window.__sockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();
"""


class Page:
    """A page in its own browser context (own storage), collecting errors as it goes."""

    def __init__(self, browser: Any, viewport: dict[str, int], locale: str = "en-US") -> None:
        self.context = browser.new_context(viewport=viewport, locale=locale)
        self.context.add_init_script(SOCKET_SPY)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.api_calls: list[str] = []
        self.console: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        self.page.on("request", lambda req: self.api_calls.append(f"{req.method} {req.url}"))

    def open(self, url: str) -> Page:
        self.page.goto(url)
        return self

    def wait_connected(self, timeout_s: float = 10) -> None:
        try:
            self.page.wait_for_selector(
                '#hub-state[data-state="connected"]', timeout=timeout_s * 1000
            )
        except Exception as exc:
            state = self.page.evaluate(
                "() => [document.querySelector('#hub-state')?.dataset.state,"
                " (window.__sockets || []).map((s) => [s.url, s.readyState])]"
            )
            raise AssertionError(
                f"not connected within {timeout_s}s: badge and sockets {state}; "
                f"console {self.console[-20:]}; requests {self.api_calls[-20:]}"
            ) from exc

    def wait_subscribed(self, channel: str, timeout_s: float = 10) -> None:
        """Wait until the page's hub client holds `channel` subscribed: the hub answered the
        subscribe, so the SDK has the stream position it would recover from."""
        self.page.evaluate(
            """async () => {
              const { pageHub } = await import("/static/js/live.js");
              window.__hub = await pageHub();
            }"""
        )
        self.page.wait_for_function(
            "(channel) => window.__hub?.client.getSubscription(channel)?.state === 'subscribed'",
            arg=channel,
            timeout=timeout_s * 1000,
        )

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector))

    def wait_text(
        self, selector: str, pattern: str, timeout_s: float = 5, since: float | None = None
    ) -> float:
        """Wait until `selector`'s text matches `pattern`; returns the seconds since `since`
        (a time.monotonic() reading; default: the call)."""
        started = time.monotonic() if since is None else since
        self.page.wait_for_function(
            "([sel, re]) => { const n = document.querySelector(sel);"
            " return n && !n.closest('[hidden]') && new RegExp(re).test(n.textContent); }",
            arg=[selector, pattern],
            timeout=timeout_s * 1000,
        )
        return time.monotonic() - started

    def close(self) -> None:
        assert not self.errors, f"page errors: {self.errors}"
        self.context.close()


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Page]]:
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.close()


def _page(pages: list[Page], browser: Any, viewport: dict[str, int], **kw: Any) -> Page:
    page = Page(browser, viewport, **kw)
    pages.append(page)
    return page


def _seed_room(server: LiveServer, unique: str, price_cents: int = 9_900) -> dict[str, Any]:
    host = server.token(f"host-{unique}", "host")
    product = server.call(
        "POST", "/api/products", host,
        {"sku": f"TEA-{unique}", "title": f"Oolong tea {unique}", "price_cents": price_cents,
         "commission_bps": 1_000},
    )  # fmt: skip
    room = server.call("POST", "/api/rooms", host, {"title": f"Tea tasting {unique}"})
    server.call("POST", f"/api/rooms/{room['id']}/live", host)
    return {"host": host, "product": product, "room_id": room["id"]}


def _start_drop(server: LiveServer, seeded: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {
        "product_id": seeded["product"]["id"],
        "price_cents": 6_600,
        "quantity": 5,
        "per_buyer_limit": 2,
        "starts_in_s": 0,
        "duration_s": 300,
    }
    body.update(fields)
    drop: dict[str, Any] = server.call(
        "POST", f"/api/rooms/{seeded['room_id']}/drops", seeded["host"], body
    )
    return drop


def _fill_ratio(page: Page) -> float:
    return float(
        page.page.evaluate(
            "() => { const bar = document.querySelector('#stock');"
            " return document.querySelector('#stock-fill').getBoundingClientRect().width"
            " / bar.getBoundingClientRect().width; }"
        )
    )


def _no_horizontal_scroll(page: Page) -> None:
    overflow = page.page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"page scrolls sideways by {overflow}px"


def _screenshot(page: Page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    # a passing toast would float over the middle of a full-page picture
    page.page.evaluate("() => document.getElementById('toast')?.classList.remove('visible')")
    page.page.wait_for_timeout(300)
    page.page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{name} screenshot looks empty"
    return path


def test_host_pins_and_starts_a_drop_and_viewers_see_it_within_a_second(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES)
    seeded = _seed_room(live_server, unique)
    room_id, product = seeded["room_id"], seeded["product"]
    viewer_token = live_server.token(f"viewer-{unique}")
    host = _page(pages, browser, DESKTOP).open(
        f"{live_server.base_url}/host/{room_id}?products={product['id']}#token={seeded['host']}"
    )
    viewer = _page(pages, browser, PHONE).open(
        f"{live_server.base_url}/r/{room_id}#token={viewer_token}"
    )
    host.wait_connected()
    viewer.wait_connected()
    assert "#token=" not in viewer.page.url, "the token is removed from the address bar"
    viewer.wait_text("#room-status", "LIVE")
    assert viewer.page.is_hidden("#pinned")

    clicked = time.monotonic()
    host.page.click(f'#products li[data-product-id="{product["id"]}"] button')
    pin_seen_after = viewer.wait_text("#pinned-title", re.escape(product["title"]), since=clicked)
    assert pin_seen_after < LIVE_WITHIN_S, (
        f"pinned card reached the viewer after {pin_seen_after:.2f}s"
    )
    assert viewer.text("#pinned-price") == "¥99.00"

    host.page.select_option("#drop-product-id", product["id"])
    host.page.fill("#drop-price-input", "66")
    host.page.fill("#drop-quantity", "5")
    host.page.fill("#drop-limit", "2")
    host.page.fill("#drop-delay", "3")
    host.page.fill("#drop-duration", "120")
    clicked = time.monotonic()
    host.page.click("#start-drop")
    drop_seen_after = viewer.wait_text("#drop-countdown", r"Starts in 0:0[0-3]", since=clicked)
    assert drop_seen_after < LIVE_WITHIN_S, f"drop reached the viewer after {drop_seen_after:.2f}s"
    (artifacts / "latency.txt").write_text(
        f"host click → viewer page shows it (s): pin {pin_seen_after:.3f}, "
        f"drop {drop_seen_after:.3f}\n"
    )
    assert viewer.text("#drop-price") == "¥66.00"
    assert viewer.text("#stock-text") == "5 left of 5"
    assert viewer.page.is_disabled("#buy"), "no buying before the drop starts"
    # the countdown runs out on the server's clock and the drop opens by itself
    viewer.wait_text("#drop-countdown", r"Ends in 1:5\d|Ends in 2:00", timeout_s=6)
    viewer.page.wait_for_selector("#buy:not([disabled])", timeout=2000)
    host.wait_text("#drop-countdown", "Ends in")
    assert host.text("#count-remaining") == "5"

    _no_horizontal_scroll(viewer)
    _screenshot(viewer, artifacts, "room-phone")
    _screenshot(host, artifacts, "host-desktop")


def test_countdown_follows_server_time_not_the_device_clock(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES)
    seeded = _seed_room(live_server, unique)
    viewer = _page(pages, browser, PHONE)
    # this phone's clock is 10 minutes slow
    viewer.page.clock.install(time=datetime.now(UTC) - timedelta(minutes=10))
    _start_drop(live_server, seeded, starts_in_s=40)
    viewer.open(f"{live_server.base_url}/r/{seeded['room_id']}")
    viewer.wait_text("#drop-countdown", r"Starts in 0:[34]\d")
    assert viewer.page.is_disabled("#buy")


def test_viewer_buys_and_pays_and_everything_updates_live(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES, ATTRIBUTION_ROUTES)
    seeded = _seed_room(live_server, unique)
    room_id, product = seeded["room_id"], seeded["product"]
    distributor_token = live_server.token(f"dist-{unique}", "viewer", "distributor")
    live_server.call("POST", "/api/distributors", distributor_token, {"team": f"team-{unique}"})
    link = live_server.call("POST", "/api/links", distributor_token, {"room_id": room_id})
    live_server.call(
        "POST", f"/api/rooms/{room_id}/pin", seeded["host"], {"product_id": product["id"]}
    )
    drop = _start_drop(live_server, seeded, quantity=5, per_buyer_limit=2, price_cents=6_600)

    distributor = _page(pages, browser, DESKTOP).open(
        f"{live_server.base_url}/d?room={room_id}#token={distributor_token}"
    )
    distributor.wait_connected()
    distributor.wait_text("#stat-orders strong", "^0$")
    host = _page(pages, browser, DESKTOP).open(
        f"{live_server.base_url}/host/{room_id}#token={seeded['host']}"
    )
    host.wait_connected()

    # the viewer follows the distributor's share link, signed in
    viewer_token = live_server.token(f"buyer-{unique}")
    viewer = _page(pages, browser, PHONE).open(
        f"{live_server.base_url}/l/{link['code']}#token={viewer_token}"
    )
    assert f"/r/{room_id}" in viewer.page.url and f"via={link['code']}" in viewer.page.url
    viewer.wait_connected()
    viewer.wait_text("#stock-text", "5 left of 5")
    distributor.wait_text("#stat-clicks strong", "^[1-9]")
    # the browser's click (cookie, no token yet) and the page's signed-in entry are one person
    viewer.page.wait_for_function(
        "() => Object.keys(localStorage).some(k => k.startsWith('livesell.entered.'))"
    )
    me = live_server.call("GET", "/api/distributors/me", distributor_token)
    assert (me["clicks"], me["visitors"]) == (1, 1), "one person: one click, one visitor"

    # a double tap is one order
    viewer.page.dblclick("#buy")
    viewer.wait_text("#order-status", "Reserved")
    viewer.wait_text("#order-hold", r"Pay within \d+:\d\d")
    viewer.wait_text("#stock-text", "4 left of 5")
    host.wait_text("#count-held", "^1$")
    time.sleep(0.5)
    stock = live_server.call("GET", f"/api/drops/{drop['id']}")
    assert (stock["held"], stock["remaining"]) == (1, 4), "a double tap placed one order"
    assert abs(_fill_ratio(viewer) - 0.8) < 0.02

    started = time.monotonic()
    viewer.page.click("#pay")
    viewer.wait_text("#order-status", "Paid")
    # the ticker, the host's counts and the distributor's commission follow, live
    viewer.wait_text("#ticker li", r"b\*+\w? bought 1 × " + re.escape(product["title"]))
    host.wait_text("#count-sold", "^1$")
    host.wait_text("#ticker li", "bought 1 ×")
    distributor.wait_text("#stat-orders strong", "^1$")
    distributor.wait_text("#stat-pending strong", re.escape("¥6.60"))
    distributor.wait_text("#stat-gmv strong", re.escape("¥66.00"))
    distributor.wait_text("#feed li", re.escape("commission ¥6.60 pending"))
    distributor.wait_text("#rank", "#1")
    assert time.monotonic() - started < 10
    assert (distributor.text("#stat-clicks strong"), distributor.text("#stat-visitors strong")) == (
        "1",
        "1",
    )

    _no_horizontal_scroll(viewer)
    _screenshot(viewer, artifacts, "room-phone-paid")
    _screenshot(host, artifacts, "host-desktop-sold")
    _screenshot(distributor, artifacts, "distributor-desktop")


def test_reload_mid_drop_shows_the_same_state(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES)
    seeded = _seed_room(live_server, unique)
    room_id = seeded["room_id"]
    live_server.call(
        "POST", f"/api/rooms/{room_id}/pin", seeded["host"], {"product_id": seeded["product"]["id"]}
    )
    drop = _start_drop(live_server, seeded, quantity=4, per_buyer_limit=1)
    other = live_server.token(f"other-{unique}")
    bought = live_server.call(
        "POST", f"/api/drops/{drop['id']}/buy", other, {"quantity": 1},
        headers={"Idempotency-Key": f"k-{unique}"},
    )  # fmt: skip
    live_server.call("POST", f"/api/orders/{bought['order_id']}/pay", other)

    viewer_token = live_server.token(f"reloader-{unique}")
    viewer = _page(pages, browser, PHONE).open(
        f"{live_server.base_url}/r/{room_id}#token={viewer_token}"
    )
    viewer.wait_connected()
    viewer.wait_text("#stock-text", "3 left of 4")
    viewer.page.click("#buy")
    viewer.wait_text("#order-status", "Reserved")
    viewer.wait_text("#stock-text", "2 left of 4")
    before = viewer.text("#drop-countdown")

    viewer.page.reload()
    viewer.wait_connected()
    viewer.wait_text("#stock-text", "2 left of 4")
    viewer.wait_text("#order-status", "Reserved")
    viewer.wait_text("#order-hold", r"Pay within")
    after = viewer.text("#drop-countdown")
    assert before.startswith("Ends in") and after.startswith("Ends in")
    assert viewer.text("#pinned-title") == seeded["product"]["title"]
    # one unit per buyer: a second tap is refused with words, not a JSON blob
    viewer.page.click("#buy")
    viewer.wait_text("#buy-error", "per-person limit")
    assert "{" not in viewer.text("#buy-error")

    host = _page(pages, browser, PHONE).open(
        f"{live_server.base_url}/host/{room_id}#token={seeded['host']}"
    )
    host.wait_text("#count-sold", "^1$")
    host.wait_text("#count-held", "^1$")
    host.wait_text("#count-remaining", "^2$")
    _no_horizontal_scroll(host)
    _screenshot(host, artifacts, "host-phone")


def test_a_dropped_connection_recovers_the_missed_events(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES)
    seeded = _seed_room(live_server, unique)
    room_id = seeded["room_id"]
    drop = _start_drop(live_server, seeded, quantity=6, per_buyer_limit=3)
    viewer = _page(pages, browser, PHONE).open(f"{live_server.base_url}/r/{room_id}")
    viewer.wait_connected()
    viewer.wait_text("#stock-text", "6 left of 6")
    viewer.wait_subscribed(f"room:{room_id}")  # else there is no position to recover from
    snapshot_loads = sum(f"/api/rooms/{room_id}" in call for call in viewer.api_calls)

    viewer.page.evaluate(
        "() => { window.__blockHub = true; window.__sockets.forEach(s => s.close()); }"
    )
    viewer.wait_text("#hub-state", "Reconnecting")
    # while the viewer is cut off: the host pins the card and a buyer takes two units
    live_server.call(
        "POST", f"/api/rooms/{room_id}/pin", seeded["host"], {"product_id": seeded["product"]["id"]}
    )
    buyer = live_server.token(f"cut-{unique}")
    live_server.call(
        "POST", f"/api/drops/{drop['id']}/buy", buyer, {"quantity": 2},
        headers={"Idempotency-Key": f"cut-{unique}"},
    )  # fmt: skip
    time.sleep(0.3)
    assert viewer.page.is_hidden("#pinned"), "nothing arrives while disconnected"

    viewer.page.evaluate("() => { window.__blockHub = false; }")
    viewer.wait_connected(timeout_s=25)
    viewer.wait_text("#pinned-title", re.escape(seeded["product"]["title"]))
    viewer.wait_text("#stock-text", "4 left of 6")
    reloads = sum(f"/api/rooms/{room_id}" in call for call in viewer.api_calls) - snapshot_loads
    assert reloads == 0, "the gap was recovered from the hub, not by reloading the snapshot"


def test_chinese_is_the_default_for_chinese_browsers_and_the_switch_sticks(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES)
    seeded = _seed_room(live_server, unique)
    _start_drop(live_server, seeded)
    viewer = _page(pages, browser, PHONE, locale="zh-CN").open(
        f"{live_server.base_url}/r/{seeded['room_id']}"
    )
    viewer.wait_text("#buy", "立即抢购")
    viewer.wait_text("#room-status", "直播中")
    viewer.wait_text("#stock-text", "剩余 5 / 5 件")
    _screenshot(viewer, artifacts, "room-phone-zh")
    viewer.page.click("#lang-switch")
    viewer.wait_text("#buy", "Buy now")
    viewer.page.reload()
    viewer.wait_text("#buy", "Buy now")
    viewer.wait_text("#stock-text", "5 left of 5")


def test_distributor_signs_up_makes_a_link_and_its_qr_code_scans(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES, ATTRIBUTION_ROUTES)
    seeded = _seed_room(live_server, unique)
    token = live_server.token(f"newbie-{unique}", "viewer", "distributor")
    page = _page(pages, browser, PHONE).open(f"{live_server.base_url}/d#token={token}")
    page.page.wait_for_selector("#become:not([hidden])")
    page.page.fill("#team", f"Team {unique}")
    page.page.click("#become-form button")
    page.page.wait_for_selector("#dashboard:not([hidden])")
    page.wait_text("#team-name", f"Team {unique}")
    page.page.fill("#link-room", str(seeded["room_id"]))
    page.page.click("#link-form button")
    page.page.wait_for_selector(".link-item img.qr")
    url = page.page.get_attribute(".link-item img.qr", "data-url")
    assert url and re.search(r"/l/[\w-]+$", url)
    assert page.text(".link-url") == url
    # the picture the page shows (a toast may float over it on a phone, so drawn to a canvas
    # rather than screenshot), decoded by zxing
    page.page.wait_for_function(
        "() => { const img = document.querySelector('.link-item img.qr');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    data_url = page.page.eval_on_selector(
        ".link-item img.qr",
        "img => { const c = document.createElement('canvas');"
        " c.width = img.naturalWidth * 2; c.height = img.naturalHeight * 2;"
        " const g = c.getContext('2d'); g.fillStyle = '#fff'; g.fillRect(0, 0, c.width, c.height);"
        " g.imageSmoothingEnabled = false; g.drawImage(img, 0, 0, c.width, c.height);"
        " return c.toDataURL('image/png'); }",
    )
    drawn = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    decoded = [found.text for found in zxingcpp.read_barcodes(drawn)]
    assert decoded == [url], "the QR code on the page scans to the share link"
    page.wait_connected()
    page.wait_text("#rank", "Not ranked yet")
    _no_horizontal_scroll(page)
    _screenshot(page, artifacts, "distributor-phone")

    # the link works: following it lands on the room page with the code
    follower = _page(pages, browser, DESKTOP).open(url)
    assert f"/r/{seeded['room_id']}?via=" in follower.page.url
    follower.wait_text("#room-title", f"Tea tasting {unique}")
    _screenshot(follower, artifacts, "room-desktop")
    page.wait_text("#stat-clicks strong", "^1$")


def test_an_unpaid_hold_counts_down_expires_and_its_stock_returns(
    servers: Servers, browser: Any, pages: list[Page], unique: str
) -> None:
    with running_server(servers, LIVESELL_HOLD_S="4") as server:
        server.need(ROOM_ROUTES, STORE_ROUTES)
        seeded = _seed_room(server, unique)
        _start_drop(server, seeded, quantity=2, per_buyer_limit=1)
        viewer = _page(pages, browser, PHONE).open(
            f"{server.base_url}/r/{seeded['room_id']}#token={server.token(f'slow-{unique}')}"
        )
        viewer.wait_connected()
        viewer.page.click("#buy")
        viewer.wait_text("#order-hold", r"Pay within 0:0[34]")
        viewer.wait_text("#stock-text", "1 left of 2")
        viewer.wait_text("#order-status", "Reservation expired", timeout_s=10)
        viewer.wait_text("#stock-text", "2 left of 2")
        assert viewer.page.is_hidden("#pay"), "an expired order cannot be paid"
