"""Winners' orders, written to PostgreSQL together.

A flash sale's winners arrive at once, and each order alone would pay for a round trip, a
transaction and a commit, and contend with the others for the drop's rows. OrderWriter queues
them: while a batch is being written the winners that arrive wait, and the next batch takes them
all (up to MAX_BATCH) in one call of storefront_place_orders (migration 0010): one statement,
one commit, each order in its own subtransaction, so one order's refusal (a unit already
claimed, the buyer's limit, a used Idempotency-Key) leaves the others written. When nothing is
being written an order goes at once, alone: batching adds no wait to a quiet drop.

Batches written at once (by this process or another) must not deadlock: each order locks its
buyer's quota row (drop_buyers) until the batch commits, so two batches holding buyers x and y
in opposite orders would each wait for the other. A batch is therefore written in one global
order, by drop and then buyer, and its results handed back in the callers' order. A deadlock
PostgreSQL still finds (with other writers of those rows, such as a worker releasing expired
holds) rolls the whole batch back, and the batch is written again, up to DEADLOCK_RETRIES times.

A batch that fails as a whole (the connection lost, the write timing out) fails every order in
it, each caller then giving its units back as for any failed write.

A PostgreSQL backend compiles the PL/pgSQL functions and plans the statements of an order (and
of its foreign-key checks) the first time it writes one, and asyncpg prepares the call once per
connection: several milliseconds per pooled connection, which the first flash sale after a
start would pay while its winners wait. `rehearse_orders` has every pooled connection place one
order on a throwaway drop in a transaction it rolls back, before the API serves. The rehearsal
takes no value of any sequence (a rollback does not give one back): the product, room and drop
bring their own ids, and the order and its unit claim take livesell.rehearsal_id's (migration
0012), so starts leave no gaps in order numbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

import attribution
from core.resources import Resources
from core.settings import Settings

log = logging.getLogger("livesell.storefront.placing")

# orders per batch: a backend caches 64 subtransactions, past which snapshots slow down
MAX_BATCH = 32
# batches being written at once by one process, each on its own pooled connection
MAX_IN_FLIGHT = 2
# a batch's write (pool wait included) is abandoned after this long: well before the worker
# would call a winner's units abandoned
WRITE_TIMEOUT_S = 10.0
# a batch PostgreSQL rolled back to break a deadlock is written again this many times at most
DEADLOCK_RETRIES = 3

PLACE_ORDERS_SQL = (
    "SELECT * FROM storefront_place_orders($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A gate winner's order to write."""

    drop_id: int
    buyer_id: str
    key: str
    fingerprint: bytes
    units: Sequence[int]
    # a coupon claim the order applies, and a referral code given with the buy
    coupon_claim_id: int | None = None
    referral_code: str | None = None


@dataclass(frozen=True, slots=True)
class Placed:
    """The order is written: what its 201 says."""

    order_id: int
    hold_expires_at: datetime
    amount_cents: int


@dataclass(frozen=True, slots=True)
class NotPlaced:
    """Nothing was written, and why (storefront_place_orders' outcomes, migrations 0014, 0041)."""

    reason: Literal[
        "missing",
        "scheduled",
        "closed",
        "ended",
        "key_taken",
        "unit_taken",
        "over_limit",
        "coupon_taken",
        "coupon_invalid",
        "code_missing",
    ]


PlaceOutcome = Placed | NotPlaced


class OrderWriter:
    """One per process (`Shop.orders`)."""

    def __init__(self, res: Resources) -> None:
        self._res = res
        self._queue: list[tuple[OrderRequest, asyncio.Future[PlaceOutcome]]] = []
        self._in_flight = 0
        self._writers: set[asyncio.Task[None]] = set()
        self.batches = 0  # batches written, for tests and curiosity

    async def place(self, order: OrderRequest) -> PlaceOutcome:
        future: asyncio.Future[PlaceOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append((order, future))
        if self._in_flight < MAX_IN_FLIGHT:
            self._in_flight += 1
            writer = asyncio.create_task(self._drain())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        try:
            # a caller that goes away leaves its order to the batch (which may write it)
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_nobody_waits)
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                try:
                    async with asyncio.timeout(WRITE_TIMEOUT_S):
                        placed = await self._write([order for order, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, placed, strict=False):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._in_flight -= 1
            if self._queue and self._in_flight == 0:  # cancelled with orders still waiting
                for _, future in self._queue:
                    future.cancel()
                self._queue.clear()

    async def _write(self, orders: list[OrderRequest]) -> list[PlaceOutcome]:
        """Write `orders` in lock order (see the module's docstring); their results in the
        order given."""
        by_lock = sorted(range(len(orders)), key=lambda i: (orders[i].drop_id, orders[i].buyer_id))
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                rows = await self._place([orders[i] for i in by_lock])
                break
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES:
                    raise
                log.info("a batch of %d orders met a deadlock; writing it again", len(orders))
        if len(rows) != len(orders):
            raise RuntimeError(f"{len(rows)} results for {len(orders)} orders")
        self.batches += 1
        row_of = dict(zip(by_lock, rows, strict=True))
        return [_placed(row_of[i]) for i in range(len(orders))]

    async def _place(self, orders: list[OrderRequest]) -> list[asyncpg.Record]:
        async with self._res.pool.acquire() as conn:
            return await _place_orders(conn, self._res.settings, orders)


async def _place_orders(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    settings: Settings,
    orders: list[OrderRequest],
) -> list[asyncpg.Record]:
    """One call of storefront_place_orders: a row per order, in order."""
    terms = attribution.credit_terms(settings)
    return await conn.fetch(
        PLACE_ORDERS_SQL,
        [o.drop_id for o in orders],
        [o.buyer_id for o in orders],
        [len(o.units) for o in orders],
        [unit for o in orders for unit in o.units],
        [o.key for o in orders],
        [o.fingerprint for o in orders],
        timedelta(seconds=settings.hold_s),
        terms.rule,
        terms.window,
        [o.coupon_claim_id or 0 for o in orders],
        [o.referral_code or "" for o in orders],
    )


def _placed(row: asyncpg.Record) -> PlaceOutcome:
    """One row of storefront_place_orders, decoded (the one place its outcomes are read)."""
    if row["placed_outcome"] == "placed":
        return Placed(row["order_id"], row["hold_expires_at"], row["amount_cents"])
    return NotPlaced(row["placed_outcome"])


# how long a rehearsal waits for a pooled connection another task holds
REHEARSAL_WAIT_S = 1.0
# Every row a rehearsal writes (all rolled back) takes minus the backend's pid as its id, unique
# among the rehearsals running at once, rather than its sequence's next: a rolled-back insert
# still uses up a sequence value, and starts must not skip order numbers (nor make a fresh
# database's first room room 21). The product, room and drop say so in their inserts; the
# order and its unit claim, inserted by storefront_place_order, take the transaction's
# livesell.rehearsal_id (their columns' defaults, migration 0012).
REHEARSAL_ID_SQL = "SELECT set_config('livesell.rehearsal_id', (-pg_backend_pid())::text, true)"
# the throwaway drop a rehearsal sells from
REHEARSAL_DROP_SQL = """
WITH product AS (
    INSERT INTO products (id, sku, title, price_cents, commission_bps, created_by)
    VALUES (-pg_backend_pid(), 'livesell-rehearsal-' || pg_backend_pid(), 'rehearsal', 100,
            1000, 'livesell')
    RETURNING id
), room AS (
    INSERT INTO rooms (id, host_id, title)
    VALUES (-pg_backend_pid(), 'livesell', 'rehearsal')
    RETURNING id
), drop AS (
    INSERT INTO drops (id, room_id, product_id, price_cents, quantity, per_buyer_limit,
                       starts_at, ends_at, created_by)
    SELECT -pg_backend_pid(), room.id, product.id, 100, 1, 1, now() - interval '1 minute',
           now() + interval '1 minute', 'livesell'
    FROM room, product
    RETURNING id
)
INSERT INTO drop_units (drop_id, unit_no) SELECT id, 1 FROM drop RETURNING drop_id
"""


async def rehearse_orders(res: Resources) -> int:
    """Place one order on a throwaway drop on every pooled connection at once, each in a
    transaction rolled back (see the module's docstring); the connections rehearsed. Those
    not free within REHEARSAL_WAIT_S are skipped, and a failure is logged, never raised: a cold
    connection is slower, not wrong."""
    pool = res.pool
    started = time.perf_counter()
    taken: list[asyncpg.pool.PoolConnectionProxy] = []
    try:
        for _ in range(pool.get_size()):
            try:
                taken.append(await pool.acquire(timeout=REHEARSAL_WAIT_S))
            except TimeoutError:
                break
        results = await asyncio.gather(
            *(_rehearse(res.settings, conn) for conn in taken), return_exceptions=True
        )
    finally:
        for conn in taken:
            await pool.release(conn)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        log.warning("order rehearsal failed on %d connections: %r", len(failed), failed[0])
    rehearsed = len(results) - len(failed)
    log.info(
        "orders rehearsed on %d PostgreSQL connections in %.0f ms",
        rehearsed,
        (time.perf_counter() - started) * 1000,
    )
    return rehearsed


async def _rehearse(settings: Settings, conn: asyncpg.pool.PoolConnectionProxy) -> None:
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(REHEARSAL_ID_SQL)
        drop_id = await conn.fetchval(REHEARSAL_DROP_SQL)
        order = OrderRequest(drop_id, "livesell-rehearsal", "rehearsal", bytes(32), [1])
        rows = await _place_orders(conn, settings, [order])
        if not isinstance(_placed(rows[0]), Placed):
            raise RuntimeError(f"the rehearsal order was not placed: {rows!r}")
    finally:
        await transaction.rollback()


def _nobody_waits(future: asyncio.Future[PlaceOutcome]) -> None:
    """The outcome of an order whose caller went away: retrieved, so that a failed batch is
    not reported again as an exception nobody retrieved."""
    if not future.cancelled():
        future.exception()
