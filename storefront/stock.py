"""Telling viewers about stock: `stock.changed` with PostgreSQL's counts, `drop.sold_out` once.

`stock.changed` is a latest-value event, so announcements of one drop coalesce within a process:
while one pass reads a drop's counts and publishes them, changes committed meanwhile are only
noted, and one more pass after it announces them all. Under a stream of sales the counts are read
about once per pass instead of once per sale; a lone change is announced at once, by its caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.db import Conn
from core.events import Outbox
from core.resources import Resources
from storefront.catalog import StockCounts, drop_stock
from storefront.events import DropSoldOut, StockChanged

log = logging.getLogger("livesell.storefront.stock")


async def announce_stock(
    conn: Conn, outbox: Outbox, drop_id: int, *, sold: bool, returned: bool
) -> StockCounts:
    """Queue `stock.changed` with PostgreSQL's counts. After units were `sold` (claimed) and none
    remain, `drop.sold_out` once (whoever flips `sold_out_at` announces it); after units were
    `returned` and some remain, clear the flag so the next sell-out is announced again."""
    room_id, counts = await drop_stock(conn, drop_id)
    outbox.room(
        room_id,
        StockChanged(
            drop_id=str(drop_id),
            quantity=counts.quantity,
            remaining=counts.remaining,
            sold=counts.sold,
            held=counts.held,
        ),
    )
    if sold and counts.remaining == 0:
        flipped = await conn.fetchval(
            "UPDATE drops SET sold_out_at = now() WHERE id = $1 AND sold_out_at IS NULL "
            "RETURNING id",
            drop_id,
        )
        if flipped is not None:
            outbox.room(
                room_id,
                DropSoldOut(
                    drop_id=str(drop_id),
                    quantity=counts.quantity,
                    sold=counts.sold,
                    held=counts.held,
                ),
            )
    elif returned and counts.remaining > 0:
        await conn.execute(
            "UPDATE drops SET sold_out_at = NULL WHERE id = $1 AND sold_out_at IS NOT NULL",
            drop_id,
        )
    return counts


@dataclass
class _Noted:
    """Changes to a drop committed while a pass was under way."""

    sold: bool = False
    returned: bool = False


class StockAnnouncer:
    """Coalesces the stock announcements of a process, per drop (see the module's docstring)."""

    def __init__(self, res: Resources) -> None:
        self._res = res
        self._passes: dict[int, _Noted] = {}  # drops with a pass under way

    async def changed(self, drop_id: int, *, sold: bool = False, returned: bool = False) -> None:
        """Announce the drop's stock after a change that committed. When a pass is already under
        way it may have read the counts before this change: the change is noted for the pass
        that follows it, and this returns at once."""
        noted = self._passes.get(drop_id)
        if noted is not None:
            noted.sold |= sold
            noted.returned |= returned
            return
        self._passes[drop_id] = _Noted()
        await self._pass(drop_id, sold, returned)

    async def _pass(self, drop_id: int, sold: bool, returned: bool) -> None:
        res = self._res
        try:
            outbox = Outbox()
            async with res.pool.acquire() as conn:
                await announce_stock(conn, outbox, drop_id, sold=sold, returned=returned)
            await outbox.flush(res.publisher)
        finally:
            noted = self._passes.pop(drop_id)
            if noted.sold or noted.returned:
                # changes came in meanwhile: the next pass runs after this one
                self._passes[drop_id] = _Noted()
                res.after_commit.soon(
                    self._follow_up(drop_id, noted), what=f"stock of drop {drop_id}"
                )

    async def _follow_up(self, drop_id: int, noted: _Noted) -> None:
        try:
            await self._pass(drop_id, noted.sold, noted.returned)
        except Exception as exc:  # noqa: BLE001 - the next change of the drop announces again
            log.warning("drop %d: stock not announced: %r", drop_id, exc)
