"""Attribution fixtures: a shop driven through SQL plus the hooks, distributors with links,
viewers entering rooms through the HTTP routes, and the ledger invariants checked after steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from attribution.stats import dashboard
from core.resources import Resources
from tests.attribution.shop import Shop

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def shop(resources: Resources) -> Shop:
    return Shop(resources)


class People:
    """Distributors and viewers acting through the public HTTP routes."""

    def __init__(self, client: httpx.AsyncClient, auth: Auth) -> None:
        self.client = client
        self.auth = auth

    async def distributor(self, user: str, team: str | None = None) -> str:
        body = {"team": team} if team else {}
        response = await self.client.post(
            "/api/distributors", json=body, headers=self.auth(user, "viewer", "distributor")
        )
        assert response.status_code in (200, 201), response.text
        return str(response.json()["id"])

    async def link(self, user: str, room_id: int, product_id: int | None = None) -> str:
        body: dict[str, Any] = {"room_id": str(room_id)}
        if product_id is not None:
            body["product_id"] = str(product_id)
        response = await self.client.post(
            "/api/links", json=body, headers=self.auth(user, "viewer", "distributor")
        )
        assert response.status_code == 201, response.text
        return str(response.json()["code"])

    async def click(self, user: str, code: str) -> httpx.Response:
        """A logged-in viewer follows a share link (the app passes the token along)."""
        response = await self.client.get(f"/l/{code}", headers=self.auth(user))
        assert response.status_code == 302, response.text
        return response

    async def enter(self, user: str, room_id: int, code: str | None = None) -> dict[str, Any]:
        body = {"link_code": code} if code else {}
        response = await self.client.post(
            f"/api/rooms/{room_id}/enter", json=body, headers=self.auth(user)
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def dashboard(self, user: str) -> dict[str, Any]:
        response = await self.client.get(
            "/api/distributors/me", headers=self.auth(user, "distributor")
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def people(client: httpx.AsyncClient, auth: Auth) -> People:
    return People(client, auth)


async def assert_ledger_invariants(res: Resources) -> None:
    """Σ per transaction = 0; every balance shown equals Σ of its entries; postings of an order
    only ever touch the one distributor its attribution credits."""
    async with res.pool.acquire() as conn:
        unbalanced = await conn.fetch(
            """SELECT transaction_id, sum(amount_cents) FROM ledger_entries
               GROUP BY transaction_id HAVING sum(amount_cents) <> 0"""
        )
        assert unbalanced == [], f"unbalanced transactions: {unbalanced}"
        assert await conn.fetchval("SELECT coalesce(sum(amount_cents), 0) FROM ledger_entries") == 0
        strays = await conn.fetchval(
            """SELECT count(*) FROM ledger_entries e
               JOIN ledger_transactions t ON t.id = e.transaction_id
               JOIN ledger_accounts a ON a.id = e.account_id
               LEFT JOIN order_attributions o ON o.order_id = t.order_id
               WHERE (a.distributor_id IS NOT NULL AND a.distributor_id <> t.distributor_id)
                  OR (t.order_id IS NOT NULL
                      AND o.distributor_id IS DISTINCT FROM t.distributor_id)"""
        )
        assert strays == 0
        for row in await conn.fetch("SELECT id, user_id, team, created_at FROM distributors"):
            raw = {
                r["kind"]: int(r["cents"])
                for r in await conn.fetch(
                    """SELECT a.kind, coalesce(sum(e.amount_cents), 0) AS cents
                       FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
                       WHERE a.distributor_id = $1 GROUP BY a.kind""",
                    row["id"],
                )
            }
            shown = msgspec.to_builtins(await dashboard(conn, row))
            assert shown["commission_cents"]["pending"] == raw.get("pending", 0)
            assert shown["balance_cents"] == raw.get("payable", 0)
            money = shown["commission_cents"]
            assert money["confirmed"] - money["paid"] == shown["balance_cents"]


@pytest.fixture
def invariants(resources: Resources) -> Callable[[], Any]:
    return lambda: assert_ledger_invariants(resources)
