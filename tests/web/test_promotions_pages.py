"""Promotions on the pages, in headless Chromium against the real `livesell serve`, on a phone
(375 px) and a desktop (1280 px), in Chinese and English: the host releases a coupon from the
console, the viewer sees it with its live remaining count, claims it, sees the discounted price
and buys with it (the order is the server's discounted one); a viewer reserves a scheduled room
and the host sees the count; a distributor sees their referral code and copies it. Titles stay
text, and nothing scrolls sideways."""

from __future__ import annotations

import re
import uuid
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
from tests.web.test_browser import Page, _page, _seed_room, _start_drop, pages  # noqa: F401
from tests.web.test_phone import LIVE_WORD, LOCALES, _fits

pytestmark = pytest.mark.slow

COUPON_ROUTES = ("/api/rooms/{id}/coupons", "/api/coupons/{id}/claim", "/api/me/coupons")
PROMO_ROUTES = ("/api/rooms/{id}/reservations", "/api/distributors/me/codes")
LEFT = {"en": "{n} of {q} left", "zh": "剩余 {n}/{q}"}
CLAIMED = {"en": "Claimed", "zh": "已领取"}
GONE = {"en": "All claimed", "zh": "已抢光"}
TOTAL = {"en": "Total ", "zh": "合计 "}
RESERVED = {"en": "1 reserved", "zh": "1 人已预约"}
COPIED = {"en": "Copied", "zh": "已复制"}
VIEWPORTS = [PHONE, DESKTOP]


def _left(lang: str, n: int, q: int) -> str:
    return re.escape(LEFT[lang].format(n=n, q=q))


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("viewport", VIEWPORTS, ids=["375px", "1280px"])
def test_host_releases_a_coupon_the_viewer_claims_and_buys_with_it(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str,  # noqa: F811
    lang: str, viewport: dict[str, int],
) -> None:  # fmt: skip
    live_server.need(ROOM_ROUTES, STORE_ROUTES, COUPON_ROUTES)
    seeded = _seed_room(live_server, unique)
    room_id, host_token = seeded["room_id"], seeded["host"]
    drop = _start_drop(live_server, seeded, price_cents=9_900)
    base, locale = live_server.base_url, LOCALES[lang]
    host = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/host/{room_id}#token={host_token}"
    )
    viewer_name = f"viewer-{unique}"
    viewer = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/r/{room_id}#token={live_server.token(viewer_name)}"
    )
    for page in (host, viewer):
        page.wait_connected()

    # the host releases ¥10 off from ¥50, two of them, one each; the title is text, not markup
    title = f"<img src=x onerror=window.pwned=1>¥10-{unique}"
    host.page.fill("#coupon-title", title)
    host.page.select_option("#coupon-kind", "amount")
    host.page.fill("#coupon-value", "10")
    host.page.fill("#coupon-min", "50")
    host.page.fill("#coupon-quantity", "2")
    host.page.fill("#coupon-per-user", "1")
    host.page.click("#release-coupon")
    host.wait_text("#host-coupons .coupon-left", _left(lang, 2, 2))

    # the viewer sees it arrive (coupon.released), claims it, and the count moves live
    viewer.wait_text("#coupon-list .coupon-title", re.escape(title))
    viewer.wait_text("#coupon-list .coupon-left", _left(lang, 2, 2))
    viewer.page.click("#coupon-list .coupon-claim")
    viewer.wait_text("#coupon-list .coupon-claim", CLAIMED[lang])
    viewer.wait_text("#coupon-list .coupon-left", _left(lang, 1, 2))
    # another viewer takes the last one elsewhere: both pages see none left (coupon.remaining)
    [coupon] = live_server.call("GET", f"/api/rooms/{room_id}/coupons")["coupons"]
    live_server.call(
        "POST", f"/api/coupons/{coupon['id']}/claim", live_server.token(f"other-{unique}"),
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )  # fmt: skip
    viewer.wait_text("#coupon-list .coupon-left", _left(lang, 0, 2))
    host.wait_text("#host-coupons .coupon-left", _left(lang, 0, 2))
    host.wait_text("#host-coupons .coupon-status", GONE[lang])
    for page in (host, viewer):
        assert page.page.evaluate("() => window.pwned") is None
        assert page.page.query_selector(".coupon-list img") is None

    # checkout: the claim is chosen, the price shown is the discounted one, and the order too
    viewer.wait_text("#buy-total-text", TOTAL[lang] + re.escape("¥89.00"))
    assert viewer.text("#buy-total-before") == "¥99.00"
    viewer.page.click("#buy")
    viewer.wait_text("#order-amount", re.escape("¥89.00"))
    mine = live_server.call("GET", "/api/me/coupons", live_server.token(viewer_name))
    assert mine["claims"] == [], "the claim is applied to the order"
    [order_id] = re.findall(r"\d+", viewer.text("#order-id"))
    order = live_server.call("GET", f"/api/orders/{order_id}", live_server.token(viewer_name))
    assert (order["amount_cents"], order["discount_cents"]) == (8_900, 1_000)
    assert order["coupon_claim_id"] is not None and order["drop_id"] == drop["id"]

    size = f"{viewport['width']}px"
    _fits(viewer, f"viewer coupons {size} {lang}")
    _fits(host, f"host coupons {size} {lang}")


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("viewport", VIEWPORTS, ids=["375px", "1280px"])
def test_reserve_a_scheduled_room_and_share_a_referral_code(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str,  # noqa: F811
    lang: str, viewport: dict[str, int],
) -> None:  # fmt: skip
    live_server.need(ROOM_ROUTES, ATTRIBUTION_ROUTES, PROMO_ROUTES)
    host_token = live_server.token(f"host-{unique}", "host")
    room = live_server.call("POST", "/api/rooms", host_token, {"title": f"Later {unique}"})
    base, locale = live_server.base_url, LOCALES[lang]
    viewer = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/r/{room['id']}#token={live_server.token(f'viewer-{unique}')}"
    )
    viewer.wait_connected()
    viewer.page.click("#reserve-button")
    viewer.wait_text("#reserve-count", re.escape(RESERVED[lang]))
    assert viewer.page.is_visible("#reserve-done")
    assert viewer.page.is_disabled("#reserve-button")
    host = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/host/{room['id']}#token={host_token}"
    )
    host.wait_connected()
    host.wait_text("#reservations", "^1$")
    size = f"{viewport['width']}px"
    _fits(viewer, f"viewer reserve {size} {lang}")
    _fits(host, f"host reservations {size} {lang}")
    # going live: the viewer's page turns live and the reserve card goes
    host.page.click("#go-live")
    viewer.wait_text("#room-status", LIVE_WORD[lang])
    viewer.page.wait_for_selector("#reserve", state="hidden")

    name = f"dist-{unique}"
    dist_token = live_server.token(name, "viewer", "distributor")
    live_server.call("POST", "/api/distributors", dist_token, {})
    dist = _page(pages, browser, viewport, locale=locale)
    dist.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    dist.open(f"{base}/d#token={dist_token}")
    dist.wait_text("#referral-code", "^[A-Z0-9]{4,16}$", timeout_s=10)
    [code] = live_server.call("GET", "/api/distributors/me/codes", dist_token)["codes"]
    assert dist.text("#referral-code") == code["code"]
    dist.page.click("#code-copy")
    dist.wait_text("#toast", COPIED[lang])
    assert dist.page.evaluate("() => navigator.clipboard.readText()") == code["code"]
    _fits(dist, f"distributor code {size} {lang}")
