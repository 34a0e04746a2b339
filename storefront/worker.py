"""Storefront's background loops: drop start/end, hold expiry, and keeping the gate honest."""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import Any

from core.events import Outbox
from core.loops import run_periodically
from storefront.buy.placing import WRITE_TIMEOUT_S
from storefront.catalog import drop_view, end_due_drops, start_due_drops
from storefront.events import DropStarted
from storefront.orders import EXPIRY_BATCH, expire_holds
from storefront.shop import Shop

log = logging.getLogger("livesell.storefront.worker")

SCHEDULE_INTERVAL_S = 0.5
EXPIRY_INTERVAL_S = 1.0
RECONCILE_INTERVAL_S = 5.0
# an attempt still in flight after this long lost its process: its units are returned
ABANDONED_AFTER_S = 3 * WRITE_TIMEOUT_S


async def run_schedule(shop: Shop) -> None:
    """Announce drops that start and close drops whose time is up (each once, any worker)."""
    res = shop.res
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        await start_due_drops(conn, outbox)
        ended = await end_due_drops(conn, outbox)
    for drop_id in ended:
        await shop.gate.close(drop_id)
    await outbox.flush(res.publisher)


async def run_expiry(shop: Shop) -> None:
    """Expire every hold past its time, a batch per transaction."""
    while await expire_holds(shop) == EXPIRY_BATCH:
        pass


async def reconcile_drop(
    shop: Shop, drop_id: int, *, stale_after_s: float = ABANDONED_AFTER_S
) -> str:
    """Make drop `drop_id`'s gate agree with PostgreSQL: build it when Redis lost it; rebuild it
    in place when units went missing (a process died between gate and write, or a return to the
    gate failed). Returns what was done: "built", "rebuilt", "ok", or "changed" (busy; later)."""
    res, gate = shop.res, shop.gate
    probe = await gate.probe(drop_id)
    if probe.gen is None:
        await gate.build(res.pool, drop_id)
        await _announce_started(shop, drop_id)
        return "built"
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT d.quantity, (SELECT count(*) FROM stock_claims c
                                   WHERE c.drop_id = d.id AND c.state <> 'released') AS claimed
               FROM drops d WHERE d.id = $1""",
            drop_id,
        )
    if row is None:
        return "ok"
    stale = (
        probe.oldest_in_flight_ms > 0
        and probe.oldest_in_flight_ms < (time.time() - stale_after_s) * 1000
    )
    # every unit is free, in flight, or claimed; anything else is a unit lost to the gate
    balanced = probe.free + probe.in_flight + row["claimed"] == row["quantity"]
    if balanced and not stale:
        return "ok"
    verdict = await gate.reconcile(res.pool, drop_id, stale_after_s=stale_after_s)
    if verdict == "built":
        log.info("drop %d: gate reconciled with PostgreSQL", drop_id)
        return "rebuilt"
    return verdict


async def _announce_started(shop: Shop, drop_id: int) -> None:
    """A drop selling without a gate was never announced (Redis failed as it was created), or
    Redis lost its gate and with it the room's history: `drop.started` again. Viewers who saw
    the first take the second as the same state; the others learn the drop is on."""
    outbox = Outbox()
    async with shop.res.pool.acquire() as conn:
        view = await drop_view(conn, drop_id)
        now = await conn.fetchval("SELECT now()")
        room_id = await conn.fetchval("SELECT room_id FROM drops WHERE id = $1", drop_id)
    if view.status != "live":
        return
    outbox.room(room_id, DropStarted(drop=view, server_time=now))
    await shop.res.publisher.publish_many(outbox.pending)
    log.info("drop %d announced by reconciliation", drop_id)


async def run_reconcile(shop: Shop) -> None:
    """Check the gate of every drop that sells now or soon; on start-up this builds them all."""
    async with shop.res.pool.acquire() as conn:
        drops = await conn.fetch(
            """SELECT id FROM drops WHERE closed_at IS NULL AND ends_at > now()
               AND starts_at < now() + interval '1 hour'"""
        )
    for record in drops:
        await reconcile_drop(shop, record["id"])


def worker_tasks(shop: Shop) -> list[Coroutine[Any, Any, None]]:
    return [
        run_periodically(
            "storefront drop schedule", lambda: run_schedule(shop), SCHEDULE_INTERVAL_S
        ),
        run_periodically("storefront hold expiry", lambda: run_expiry(shop), EXPIRY_INTERVAL_S),
        run_periodically(
            "storefront gate reconciliation", lambda: run_reconcile(shop), RECONCILE_INTERVAL_S
        ),
    ]
