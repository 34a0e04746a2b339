"""The operator console (/ops) and the distributor's withdrawal section in headless Chromium
against the real `livesell serve`, at 375 and 1280 px, in Chinese and English: the community
numbers follow the team filter, the charts are drawn when npm installed chart.js (tables alone
when it did not), an order held for review is approved from the page end to end, user text
shows as text, and nothing scrolls sideways.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
from tests.web.test_browser import Page, _page, _screenshot, _seed_room, _start_drop
from tests.web.test_phone import LOCALES, _fits
from web.pages import NODE_MODULES, VENDOR_FILES

pytestmark = pytest.mark.slow

OPS_ROUTES = (
    "/api/admin/community",
    "/api/admin/rooms/{id}/funnel",
    "/api/admin/reviews",
    "/api/admin/reviews/{id}",
    "/api/admin/withdrawals",
    "/api/distributors/me/withdrawals",
)
DEVICE_CLICKS = 3  # a device clicking a link this often within the window puts its order on review
PRICE_CENTS = 9_900
# chart.js is there when `make` found npm (web/node_modules); without it the page draws no chart
CHARTS = (NODE_MODULES / VENDOR_FILES["chart.umd.js"]).is_file()
WORDS = {
    "en": {"reviews": "Review queue", "approved": "Approved", "paid": "Paid orders",
           "withdrawals": "Withdrawals awaiting a decision"},
    "zh": {"reviews": "审核队列", "approved": "已通过", "paid": "付款订单",
           "withdrawals": "待审批的提现"},
}  # fmt: skip


@pytest.fixture(scope="module")
def live_server(servers: Servers) -> Iterator[LiveServer]:
    with running_server(servers, LIVESELL_REVIEW_DEVICE_CLICKS=str(DEVICE_CLICKS)) as server:
        yield server


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Page]]:
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.close()


def _click(server: LiveServer, code: str, token: str | None, device: str | None) -> None:
    headers = {"X-Device-Id": device} if device else {}
    server.call("GET", f"/l/{code}", token, headers=headers, expect=302)


def _paid(server: LiveServer, drop_id: str, buyer: str, device: str | None = None) -> str:
    token = server.token(buyer)
    headers = {"Idempotency-Key": f"key-{buyer}", **({"X-Device-Id": device} if device else {})}
    held = server.call("POST", f"/api/drops/{drop_id}/buy", token, {"quantity": 1},
                       headers=headers)  # fmt: skip
    server.call("POST", f"/api/orders/{held['order_id']}/pay", token)
    return str(held["order_id"])


def _seed(server: LiveServer, unique: str) -> dict[str, Any]:
    """A room, a distributor of a team named with markup, and two paid orders through their
    link: one from a device that clicked in a burst (held for review), one clean."""
    seeded = _seed_room(server, unique, price_cents=PRICE_CENTS)
    drop = _start_drop(server, seeded, price_cents=PRICE_CENTS, quantity=10, per_buyer_limit=1)
    team = f"<b>team-{unique}</b>"
    dist = server.token(f"dist-{unique}", "viewer", "distributor")
    server.call("POST", "/api/distributors", dist, {"team": team})
    code = server.call("POST", "/api/links", dist, {"room_id": seeded["room_id"]})["code"]
    farm = f"farm-{unique}"
    for _ in range(DEVICE_CLICKS - 1):
        _click(server, code, None, farm)
    flagged_buyer = f"b1-{unique}"
    _click(server, code, server.token(flagged_buyer), farm)
    flagged = _paid(server, drop["id"], flagged_buyer, device=farm)
    clean_buyer = f"b2-{unique}"
    _click(server, code, server.token(clean_buyer), None)
    _paid(server, drop["id"], clean_buyer)
    return {**seeded, "team": team, "flagged": flagged, "dist": dist}


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["375px", "1280px"])
def test_operator_console_filters_charts_and_approves_a_review(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path,
    lang: str, viewport: dict[str, int],
) -> None:  # fmt: skip
    live_server.need(ROOM_ROUTES, STORE_ROUTES, ATTRIBUTION_ROUTES, OPS_ROUTES)
    seeded = _seed(live_server, unique)
    admin = live_server.token(f"ops-{unique}", "admin")
    open_reviews = live_server.call("GET", "/api/admin/reviews", admin)["reviews"]
    assert seeded["flagged"] in {r["order_id"] for r in open_reviews}, "the burst is on review"
    words, size = WORDS[lang], f"{viewport['width']}px"

    ops = _page(pages, browser, viewport, locale=LOCALES[lang])
    refused: list[str] = []  # what the page's Content-Security-Policy blocked, if anything
    ops.page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    ops.open(f"{live_server.base_url}/ops?room={seeded['room_id']}#token={admin}")
    ops.page.wait_for_selector("body[data-ready]")
    ops.wait_text("#reviews-card h2", f"^{words['reviews']}$")
    ops.wait_text("#withdrawals-card h2", f"^{words['withdrawals']}$")

    # the team filter: one distributor, two buyers, two paid orders (the one on review counts)
    ops.page.fill("#filter-team", seeded["team"])
    ops.page.click("#community-form button[type=submit]")
    ops.wait_text("#ops-members strong", "^1$")
    ops.wait_text("#ops-orders strong", "^2$")
    ops.wait_text("#ops-buyers strong", "^2$")
    ops.wait_text("#ops-gmv strong", re.escape("¥198.00"))
    # the team's name is text, never markup
    ops.wait_text("#team-table td", re.escape(seeded["team"]))
    assert ops.page.locator("#team-table b, #community-card b").count() == 0
    # the room's funnel: two paid orders
    ops.wait_text("#funnel-table", words["paid"])
    paid_row = ops.page.locator("#funnel-table tr", has_text=words["paid"]).first
    assert paid_row.locator("td").nth(1).inner_text() == "2"

    drawn = ops.page.evaluate(
        """() => ({
             library: typeof window.Chart === 'function',
             ready: document.body.dataset.ready,
             charts: ['#cohort-chart', '#funnel-chart', '#contribution-chart'].map((box) => {
               const node = document.querySelector(box);
               const canvas = node.querySelector('canvas');
               return { shown: !node.hidden,
                        chart: Boolean(window.Chart && window.Chart.getChart(canvas)),
                        width: canvas.getBoundingClientRect().width };
             }),
           })"""
    )
    if CHARTS:
        assert drawn["library"] and drawn["ready"] == "charts", drawn
        for chart in drawn["charts"]:
            assert chart["shown"] and chart["chart"] and chart["width"] > 100, drawn
    else:
        assert not drawn["library"] and drawn["ready"] == "tables", drawn
        assert not any(chart["shown"] for chart in drawn["charts"]), drawn
    assert not refused, f"blocked by the page's CSP: {refused}"
    _fits(ops, f"operator console {size} {lang}")
    _screenshot(ops, artifacts, f"ops-{size}-{lang}")

    # approve the held order from the page, with a note
    item = ops.page.locator(f'#reviews li[data-order="{seeded["flagged"]}"]')
    item.locator("input.note").fill(f"known customer {unique}")
    item.locator('button[data-decision="approve"]').click()
    ops.wait_text("#toast", f"^{words['approved']}$")
    item.wait_for(state="detached")
    decided = live_server.call("GET", "/api/admin/reviews?status=approved&limit=500", admin)
    mine = [r for r in decided["reviews"] if r["order_id"] == seeded["flagged"]]
    assert [(r["status"], r["decided_by"], r["note"]) for r in mine] == [
        ("approved", f"ops-{unique}", f"known customer {unique}")
    ]
    trail = live_server.call("GET", f"/api/orders/{seeded['flagged']}/attribution", admin)
    assert trail["commission"]["state"] == "pending", "approved: back on the normal path"


def test_the_vendored_chart_library_is_served_only_when_installed(live_server: LiveServer) -> None:
    import httpx

    served = httpx.get(f"{live_server.base_url}/vendor/chart.umd.js", timeout=10)
    if CHARTS:
        assert served.status_code == 200
        assert served.headers["content-type"].startswith("text/javascript")
        assert "Chart" in served.text[:5000]
    else:
        assert served.status_code == 404
    for name in ("package.json", "..%2Fpages.py", "chart.js"):
        missing = httpx.get(f"{live_server.base_url}/vendor/{name}", timeout=10)
        assert missing.status_code == 404, name
        assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_distributor_withdrawal_shows_terms_and_refusals(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str, artifacts: Path,
    lang: str,
) -> None:  # fmt: skip
    live_server.need(ATTRIBUTION_ROUTES, OPS_ROUTES)
    dist = live_server.token(f"wd-{unique}", "viewer", "distributor")
    live_server.call("POST", "/api/distributors", dist, {})
    page = _page(pages, browser, PHONE, locale=LOCALES[lang]).open(
        f"{live_server.base_url}/d#token={dist}"
    )
    terms = {"en": r"^Minimum ¥10\.00 · no fee$", "zh": r"^最低 ¥10\.00 · 免手续费$"}[lang]
    page.wait_text("#wd-terms", terms)
    page.wait_text("#wd-available", re.escape("¥0.00"))
    page.wait_text("#withdrawals", {"en": "No withdrawals yet", "zh": "还没有提现"}[lang])

    page.page.fill("#wd-amount", "5")
    page.page.click("#withdraw-form button[type=submit]")
    page.wait_text("#wd-error", {"en": "at least ¥10.00", "zh": "最低 ¥10.00"}[lang])
    page.page.fill("#wd-amount", "12.50")
    page.page.click("#withdraw-form button[type=submit]")
    refused = {
        "en": r"Not enough confirmed balance: ¥0\.00",
        "zh": r"已确认余额不足：当前可提现 ¥0\.00",
    }
    page.wait_text("#wd-error", refused[lang])
    _fits(page, f"distributor withdrawal 375px {lang}")
    _screenshot(page, artifacts, f"withdraw-375px-{lang}")
