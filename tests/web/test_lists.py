"""The lists the pages show come from the API, not from the browser's storage: a distributor's
links (with live click counts) and payouts on a fresh device, a host's own products page by page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET, Servers
from tests.web.conftest import (
    ATTRIBUTION_ROUTES,
    DESKTOP,
    PHONE,
    ROOM_ROUTES,
    STORE_ROUTES,
    LiveServer,
    running_server,
)
from tests.web.test_browser import Page, _no_horizontal_scroll, _page, _screenshot, _seed_room

pytestmark = pytest.mark.slow


@pytest.fixture
def pages(browser: Any) -> Iterator[list[Page]]:
    """Pages opened by a test, closed after it (failing it on any page error)."""
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.close()


LIST_ROUTES = ("/api/distributors/me/links", "/api/distributors/me/payouts")
RETURN_WINDOW_S = 1


def _link_codes(page: Page) -> list[str]:
    return list(
        page.page.eval_on_selector_all(".link-item", "items => items.map(i => i.dataset.code)")
    )


def _pay_out(server: LiveServer, servers: Servers, data_dir: Path) -> None:
    """What finance runs: `livesell payouts` (settles what is due, then pays)."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=servers.pg.url,
        REDIS_URL=servers.valkey.url,
        LIVESELL_SECRET=TEST_SECRET,
        LIVESELL_DATA_DIR=str(data_dir),
        LIVESELL_RETURN_WINDOW_S=str(RETURN_WINDOW_S),
    )
    done = subprocess.run(
        [sys.executable, "-m", "livesell.cli", "payouts", "--by", "finance"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_distributor_page_lists_links_and_payouts_from_the_api(
    servers: Servers,
    browser: Any,
    pages: list[Page],
    unique: str,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    with running_server(servers, LIVESELL_RETURN_WINDOW_S=str(RETURN_WINDOW_S)) as server:
        server.need(ROOM_ROUTES, STORE_ROUTES, ATTRIBUTION_ROUTES, LIST_ROUTES)
        seeded = _seed_room(server, unique)
        room_id, product = seeded["room_id"], seeded["product"]
        other_room = server.call("POST", "/api/rooms", seeded["host"], {"title": "Second room"})
        third_room = server.call("POST", "/api/rooms", seeded["host"], {"title": "Third room"})
        token = server.token(f"sharer-{unique}", "viewer", "distributor")
        server.call("POST", "/api/distributors", token, {})
        # links made on another device: this browser has never seen them
        first = server.call("POST", "/api/links", token, {"room_id": room_id})
        second = server.call(
            "POST", "/api/links", token, {"room_id": other_room["id"], "product_id": product["id"]}
        )
        buyer = server.token(f"buyer-{unique}")
        server.call("GET", f"/l/{first['code']}", buyer, expect=302)
        drop = server.call(
            "POST", f"/api/rooms/{room_id}/drops", seeded["host"],
            {"product_id": product["id"], "price_cents": 6_600, "quantity": 3,
             "per_buyer_limit": 1, "starts_in_s": 0, "duration_s": 300},
        )  # fmt: skip
        order = server.call(
            "POST", f"/api/drops/{drop['id']}/buy", buyer, {"quantity": 1},
            headers={"Idempotency-Key": f"list-{unique}"},
        )  # fmt: skip
        server.call("POST", f"/api/orders/{order['order_id']}/pay", buyer)
        server.call("POST", f"/api/orders/{order['order_id']}/deliver", seeded["host"])
        time.sleep(RETURN_WINDOW_S + 0.2)
        _pay_out(server, servers, tmp_path)
        [paid] = server.call("GET", "/api/distributors/me/payouts", token)["payouts"]
        assert paid["amount_cents"] == 660

        page = _page(pages, browser, PHONE).open(f"{server.base_url}/d#token={token}")
        page.page.wait_for_selector(".link-item")
        assert _link_codes(page) == [second["code"], first["code"]], "newest first"
        first_item = f'.link-item[data-code="{first["code"]}"]'
        second_item = f'.link-item[data-code="{second["code"]}"]'
        page.wait_text(f"{first_item} .link-clicks", "^Clicks: 1$")
        page.wait_text(f"{second_item} .link-clicks", "^Clicks: 0$")
        assert f"Product {product['id']}" in page.text(second_item)
        page.wait_text("#payouts", re.escape("¥6.60"))
        assert f"#{paid['batch_id']} · paid" in page.text("#payouts")
        assert page.page.is_hidden("#payouts-more") and page.page.is_hidden("#links-more")

        # a click on the link shows on it, live
        page.wait_connected()
        httpx.get(f"{server.base_url}/l/{first['code']}", timeout=10)
        page.wait_text(f"{first_item} .link-clicks", "^Clicks: 2$")

        # a link made on this page joins the list from the API, on top
        page.page.fill("#link-room", str(third_room["id"]))
        page.page.click("#link-form button")
        page.page.wait_for_function("() => document.querySelectorAll('.link-item').length === 3")
        made = server.call("GET", "/api/distributors/me/links", token)["links"][0]
        assert made["room_id"] == str(third_room["id"])
        assert _link_codes(page)[0] == made["code"]
        _no_horizontal_scroll(page)
        _screenshot(page, artifacts, "distributor-phone-lists")

        page.page.click("#lang-switch")
        page.wait_text(f"{first_item} .link-clicks", "^点击 2 次$")
        assert "已打款" in page.text("#payouts")


def test_host_console_lists_the_hosts_own_products_page_by_page(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str
) -> None:
    live_server.need(ROOM_ROUTES, STORE_ROUTES)
    seeded = _seed_room(live_server, unique)
    host, room_id = seeded["host"], seeded["room_id"]
    own = [seeded["product"]["id"]]
    for i in range(51):  # one more than a page
        made = live_server.call(
            "POST", "/api/products", host,
            {"sku": f"P{i}-{unique}", "title": f"Item {i} {unique}", "price_cents": 100 + i,
             "commission_bps": 500},
        )  # fmt: skip
        own.append(made["id"])
    theirs = live_server.call(
        "POST", "/api/products", live_server.token(f"rival-{unique}", "host"),
        {"sku": f"RIVAL-{unique}", "title": "Rival's product", "price_cents": 500,
         "commission_bps": 0},
    )  # fmt: skip

    console = _page(pages, browser, DESKTOP).open(
        f"{live_server.base_url}/host/{room_id}#token={host}"
    )

    def listed() -> list[str]:
        return list(
            console.page.eval_on_selector_all(
                "#products li", "items => items.map(i => i.dataset.productId)"
            )
        )

    console.page.wait_for_selector("#products-more:not([hidden])")
    newest_first = sorted(own, key=int, reverse=True)
    assert listed() == newest_first[:50], "the newest page of the host's own products"
    assert console.page.is_hidden("#products-empty")
    console.page.click("#products-more")
    console.page.wait_for_selector("#products-more[hidden]", state="attached")
    assert listed() == newest_first, "the rest, and nobody else's"
    assert theirs["id"] not in listed()

    # `?products=` still adds products the host does not own (the demo's link does)
    linked = _page(pages, browser, PHONE).open(
        f"{live_server.base_url}/host/{room_id}?products={theirs['id']}#token={host}"
    )
    linked.page.wait_for_selector(f'#products li[data-product-id="{theirs["id"]}"]')
    linked.page.wait_for_selector(f'#products li[data-product-id="{newest_first[0]}"]')
