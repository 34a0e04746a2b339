"""Outbound webhooks: the integrating app hears of livesell's facts over HTTP.

An operator registers an endpoint (`POST /api/admin/webhooks {url, events}` → `{id, secret}`).
A fact that has a webhook event (`room.live`, ...) calls `enqueue` in its own transaction: one
`webhook_deliveries` row per subscribed endpoint, so a committed fact's notification is durable
even if the process dies right after the commit (the outbox pattern), and a rolled-back fact
has none. The worker's `deliver_due` POSTs due rows as JSON signed like livesell's inbound
provider webhook: header `Livesell-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
'<t>.<raw body>'>` under the endpoint's secret. A 2xx answer delivers; anything else (an error,
a timeout, no answer) is retried with exponential backoff (RETRY_BASE_S doubling, at most
RETRY_MAX_S) until 24 hours after the fact, then the row is `failed`; an operator may retry it.
Several workers may deliver at once: each row is taken with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
import httpx
import msgspec

from core.db import Conn
from core.resources import Resources

log = logging.getLogger("livesell.webhooks")

SIGNATURE_HEADER = "Livesell-Signature"
EVENT_HEADER = "Livesell-Event"
EventName = Literal[
    "order.paid",
    "order.refunded",
    "order.delivered",
    "commission.confirmed",
    "withdrawal.paid",
    "room.live",
]
RETRY_BASE_S = 10.0
RETRY_MAX_S = 3600.0
DELIVERY_TIMEOUT_S = 10.0
DELIVER_BATCH = 50
DELIVER_INTERVAL_S = 1.0

_encode = msgspec.json.Encoder().encode


class Envelope(msgspec.Struct, kw_only=True):
    """The body livesell POSTs: the event's name and id, when it happened, and its data."""

    id: str
    type: str
    created_at: datetime
    data: Any


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value for `body` (as livesell's inbound webhooks expect it)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def enqueue(conn: Conn, event: EventName, event_id: str, data: Mapping[str, Any]) -> int:
    """In the fact's transaction: one delivery of `event` per endpoint subscribed to it (none
    when nobody is); how many. Idempotent per (endpoint, event_id)."""
    payload = _encode(data).decode()
    status = await conn.execute(
        """INSERT INTO webhook_deliveries (endpoint_id, event, event_id, payload)
           SELECT id, $1, $2, $3::jsonb FROM webhook_endpoints WHERE $1 = ANY(events)
           ON CONFLICT (endpoint_id, event_id) DO NOTHING""",
        event,
        event_id,
        payload,
    )
    return int(status.split()[-1])


def backoff(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt a delivery is tried again."""
    return timedelta(seconds=min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, attempts - 1)))


_DUE = """
SELECT d.id, d.event, d.event_id, d.payload::text AS payload, d.attempts, d.give_up_at,
       d.created_at, e.url, e.secret
FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
ORDER BY d.next_attempt_at, d.id
LIMIT $1
FOR UPDATE OF d SKIP LOCKED
"""


async def deliver_due(res: Resources, client: httpx.AsyncClient | None = None) -> int:
    """Attempt every due delivery once (a batch at a time); how many were delivered."""
    own = client is None
    http = client or httpx.AsyncClient(timeout=DELIVERY_TIMEOUT_S)
    delivered = 0
    try:
        while True:
            async with res.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_DUE, DELIVER_BATCH)
                for row in rows:
                    delivered += await _attempt(conn, http, row)
            if len(rows) < DELIVER_BATCH:
                return delivered
    finally:
        if own:
            await http.aclose()


async def _attempt(conn: Conn, http: httpx.AsyncClient, row: asyncpg.Record) -> int:
    body = (
        b'{"id":' + _encode(row["event_id"]) + b',"type":' + _encode(row["event"])
        + b',"created_at":' + _encode(row["created_at"]) + b',"data":'
        + row["payload"].encode() + b"}"
    )  # fmt: skip
    status: int | None = None
    error: str | None = None
    try:
        reply = await http.post(
            row["url"],
            content=body,
            headers={
                "content-type": "application/json",
                SIGNATURE_HEADER: sign(row["secret"], body),
                EVENT_HEADER: row["event"],
            },
        )
        status = reply.status_code
        if not 200 <= status < 300:
            error = f"answered {status}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    attempts = row["attempts"] + 1
    if error is None:
        await conn.execute(
            """UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(),
                      attempts = $2, last_status = $3, last_error = NULL
               WHERE id = $1""",
            row["id"],
            attempts,
            status,
        )
        return 1
    await conn.execute(
        """UPDATE webhook_deliveries
           SET attempts = $2, last_status = $3, last_error = $4,
               next_attempt_at = now() + $5::interval,
               status = CASE WHEN now() + $5::interval > give_up_at THEN 'failed'
                             ELSE 'pending' END
           WHERE id = $1""",
        row["id"],
        attempts,
        status,
        error,
        backoff(attempts),
    )
    log.info("webhook %s to %s: %s (attempt %d)", row["event"], row["url"], error, attempts)
    return 0
