"""The pages on a phone (375 px) and a desktop (1280 px), in Chinese and English, in headless
Chromium against the real `livesell serve`: nothing scrolls sideways, a broken link reads as a
page, and the host console shows what a host runs the room by (revenue, viewers, one LIVE).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import (
    ATTRIBUTION_ROUTES,
    DESKTOP,
    PHONE,
    ROOM_ROUTES,
    STORE_ROUTES,
    LiveServer,
)
from tests.web.test_browser import Page, _page, _screenshot, _seed_room, _start_drop

pytestmark = pytest.mark.slow

LOCALES = {"en": "en-US", "zh": "zh-CN"}
# the room status pill's word for a live room: the one LIVE indicator a page shows
LIVE_WORD = {"en": "LIVE", "zh": "直播中"}
# English labels of the host console; none may show on the console in Chinese
HOST_LABELS_EN = (
    "Sales", "Revenue", "Paid orders", "Units sold", "Current drop", "Start a drop", "Products",
    "Orders", "Distributor leaderboard", "watching", "Connected", "Sold", "Held", "Left",
    "Go live", "End stream", "Viewer page", "Sign out", "Signed in as", "Close drop", "LIVE",
    "Flash price", "Quantity", "Limit per buyer", "Starts in", "Duration", "New product",
)  # fmt: skip
SALES_ROUTES = ("/api/rooms/{id}/sales",)


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Page]]:
    """Pages opened by a test, closed after it (failing it on any page error)."""
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.close()


def _fits(page: Page, where: str) -> None:
    """No sideways scroll, and no visible element reaching past the window's right edge."""
    width = page.page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth})"
    )
    sticking_out = page.page.evaluate(
        """() => [...document.body.querySelectorAll('*')]
             .filter(n => n.getClientRects().length && !n.closest('.offscreen'))
             .filter(n => n.getBoundingClientRect().right > window.innerWidth + 0.5
                          || (getComputedStyle(n).overflowX === 'visible'
                              && n.getBoundingClientRect().left + n.scrollWidth
                                 > window.innerWidth + 0.5))
             .map(n => n.tagName.toLowerCase() + (n.id ? '#' + n.id : '')
                       + (n.className && typeof n.className === 'string' ? '.' + n.className : ''))
             .slice(0, 12)"""
    )
    assert not sticking_out, f"{where}: elements reach past the window: {sticking_out}"
    assert width["scroll"] <= width["inner"], f"{where}: scrolls sideways ({width})"


def _paid_order(server: LiveServer, drop_id: str, buyer: str, quantity: int) -> None:
    token = server.token(buyer)
    held = server.call(
        "POST", f"/api/drops/{drop_id}/buy", token, {"quantity": quantity},
        headers={"Idempotency-Key": f"key-{buyer}"},
    )  # fmt: skip
    server.call("POST", f"/api/orders/{held['order_id']}/pay", token)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["375px", "1280px"])
def test_every_page_fits_the_screen_in_both_languages(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path,
    lang: str, viewport: dict[str, int],
) -> None:  # fmt: skip
    live_server.need(ROOM_ROUTES, STORE_ROUTES, ATTRIBUTION_ROUTES, SALES_ROUTES)
    # long words and titles are what push a narrow page sideways
    seeded = _seed_room(live_server, unique)
    room_id, host_token = seeded["room_id"], seeded["host"]
    long_title = f"Supercalifragilisticexpialidocious-oolong-tea-{unique} 特级乌龙茶礼盒装"
    product = live_server.call(
        "POST", "/api/products", host_token,
        {"sku": f"LONG-SKU-{unique}-0123456789", "title": long_title, "price_cents": 1_234_567,
         "commission_bps": 1_000},
    )  # fmt: skip
    live_server.call("POST", f"/api/rooms/{room_id}/pin", host_token, {"product_id": product["id"]})
    drop = _start_drop(
        live_server, seeded, product_id=product["id"], price_cents=999_999, quantity=50,
        per_buyer_limit=5,
    )  # fmt: skip
    dist_token = live_server.token(f"distributor-with-a-long-name-{unique}", "distributor")
    live_server.call(
        "POST", "/api/distributors", dist_token, {"team": f"A-very-long-team-{unique}"}
    )
    link = live_server.call("POST", "/api/links", dist_token, {"room_id": room_id})
    _paid_order(live_server, drop["id"], f"buyer-{unique}", 3)
    base, size = live_server.base_url, f"{viewport['width']}px"
    locale = LOCALES[lang]

    host = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/host/{room_id}#token={host_token}"
    )
    host.wait_connected()
    host.wait_text("#room-status", LIVE_WORD[lang])
    host.wait_text("#sales-revenue", re.escape("¥29,999.97"))
    host.wait_text("#sales-drops td", re.escape(long_title))
    _fits(host, f"host console {size} {lang}")
    _screenshot(host, artifacts, f"fit-host-{size}-{lang}")

    viewer = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/r/{room_id}#token={live_server.token(f'viewer-{unique}')}"
    )
    viewer.wait_connected()
    viewer.wait_text("#pinned-title", re.escape(long_title))
    viewer.wait_text("#room-status", LIVE_WORD[lang])
    _fits(viewer, f"viewer room {size} {lang}")
    _screenshot(viewer, artifacts, f"fit-room-{size}-{lang}")

    distributor = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/d?room={room_id}#token={dist_token}"
    )
    distributor.page.wait_for_selector(".link-item img.qr")
    distributor.wait_connected()
    _fits(distributor, f"distributor page {size} {lang}")
    _screenshot(distributor, artifacts, f"fit-distributor-{size}-{lang}")

    words = {
        "en": ("This share link does not work", "This live room does not exist"),
        "zh": ("分享链接无效", "直播间不存在"),
    }[lang]
    for path, title in ((f"/l/{link['code']}x", words[0]), ("/r/999999", words[1])):
        broken = _page(pages, browser, viewport, locale=locale)
        response = broken.page.goto(base + path)
        assert response is not None and response.status == 404
        broken.wait_text("#error-title", re.escape(title))
        assert "{" not in broken.text("body"), "words, not a JSON blob"
        _fits(broken, f"error page {path} {size} {lang}")
    # a small page: the shared helper's "not empty" size floor is for the full pages
    broken.page.screenshot(path=str(artifacts / f"fit-error-{size}-{lang}.png"), full_page=True)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_host_console_shows_revenue_viewers_one_live_badge_and_a_scheduled_drop(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path,
    lang: str,
) -> None:  # fmt: skip
    live_server.need(ROOM_ROUTES, STORE_ROUTES, SALES_ROUTES)
    seeded = _seed_room(live_server, unique, price_cents=8_800)
    room_id, product = seeded["room_id"], seeded["product"]
    locale = LOCALES[lang]
    host = _page(pages, browser, PHONE, locale=locale).open(
        f"{live_server.base_url}/host/{room_id}#token={seeded['host']}"
    )
    host.wait_connected()
    host.wait_text("#room-status", LIVE_WORD[lang])
    host.wait_text("#sales-revenue", re.escape("¥0.00"))
    host.wait_text("#sales-drops", {"en": "No paid orders yet", "zh": "还没有付款订单"}[lang])

    # a drop that starts later is announced as scheduled, not as started
    host.page.wait_for_selector(
        f'#drop-product-id option[value="{product["id"]}"]', state="attached"
    )
    host.page.select_option("#drop-product-id", product["id"])
    host.page.fill("#drop-price-input", "66")
    host.page.fill("#drop-quantity", "10")
    host.page.fill("#drop-limit", "3")
    host.page.fill("#drop-delay", "30")
    host.page.fill("#drop-duration", "300")
    host.page.click("#start-drop")
    scheduled = {"en": r"Drop scheduled: starts in 0:30", "zh": "秒杀已预约：0:30 后开始"}[lang]
    host.wait_text("#toast", scheduled)
    assert not re.search("Drop started|秒杀已开始", host.text("#toast"))
    host.wait_text("#drop-countdown", {"en": "Starts in", "zh": "后开抢"}[lang])
    host.page.click("#close-drop")
    host.wait_text("#drop-countdown", {"en": "Drop closed", "zh": "秒杀已关闭"}[lang])
    host.page.fill("#drop-delay", "0")
    host.page.click("#start-drop")
    host.wait_text("#toast", {"en": "Drop started", "zh": "秒杀已开始"}[lang])
    drop = live_server.call("GET", f"/api/rooms/{room_id}")["drop"]

    # viewers: the count the hub reports for the room, shown as "N watching"
    viewers = [
        _page(pages, browser, PHONE).open(f"{live_server.base_url}/r/{room_id}") for _ in range(2)
    ]
    for viewer in viewers:
        viewer.wait_connected()
    snapshot_viewers = 0
    for _ in range(50):
        snapshot_viewers = live_server.call("GET", f"/api/rooms/{room_id}")["viewers"]
        if snapshot_viewers >= 3:
            break
        host.page.wait_for_timeout(100)
    watching = {"en": f"^{snapshot_viewers} watching$", "zh": f"^{snapshot_viewers} 人在看$"}[lang]
    host.wait_text("#viewers", watching)

    # paid orders move the revenue, per drop and in all, without a reload
    _paid_order(live_server, drop["id"], f"first-{unique}", 2)
    host.wait_text("#sales-revenue", re.escape("¥132.00"))
    host.wait_text("#drop-revenue", re.escape("¥132.00"))
    host.wait_text("#sales-orders", "^1$")
    host.wait_text("#sales-units", "^2$")
    host.wait_text(f'#sales-drops tr[data-drop-id="{drop["id"]}"]', re.escape("¥132.00"))
    host.wait_text("#ticker li", re.escape("¥132.00"))
    _paid_order(live_server, drop["id"], f"second-{unique}", 1)
    host.wait_text("#sales-revenue", re.escape("¥198.00"))
    host.wait_text("#sales-orders", "^2$")
    host.wait_text("#sales-units", "^3$")

    # one LIVE indicator: the room's status; the hub badge says connected
    assert host.text("#hub-state") == {"en": "Connected", "zh": "已连接"}[lang]
    shown = host.text("body")
    assert shown.count(LIVE_WORD[lang]) == 1, f"one LIVE indicator, not {shown.count('LIVE')}"
    if lang == "zh":
        left = [label for label in HOST_LABELS_EN if re.search(rf"\b{label}\b", shown)]
        assert not left, f"English labels on the Chinese console: {left}"
    _screenshot(host, artifacts, f"host-phone-sales-{lang}")
