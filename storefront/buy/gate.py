"""The flash-sale gate: Redis in front of PostgreSQL, one Lua script per buy attempt.

Every key of drop 7 shares the hash tag `{drop:7}` (one Redis Cluster slot):

    {drop:7}:gate      hash  gen (build id), v (mutation counter), starts_ms, ends_ms, closed,
                             limit, quantity, expire_at_ms; or `missing` = no such drop (briefly)
    {drop:7}:free      set   unit numbers nobody holds
    {drop:7}:buyers    hash  buyer id -> units the gate counts as theirs
    {drop:7}:idem      hash  digest(buyer, Idempotency-Key) -> request fingerprint (hex)
    {drop:7}:inflight  hash  attempt token -> [ms, buyer, digest, fingerprint, units]: units
                             handed out whose PostgreSQL write has not been acknowledged yet
    {drop:7}:lock      string  held while one process builds the gate from PostgreSQL

A unit is always in exactly one of: the free set, an in-flight entry, or a live claim in
PostgreSQL (moving from in-flight to claimed only after the claim committed). Losers never reach
PostgreSQL. The gate is only an optimisation: PostgreSQL's one-live-claim-per-unit index and the
per-buyer CHECK refuse whatever a wrong gate lets through, so losing Redis can cause undersell
(until the gate is rebuilt from PostgreSQL) but never oversell.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
import msgspec

from core.redis_client import RedisClient
from core.scripts import Batched, register
from storefront.buy.idempotency import idempotency_digest
from storefront.buy.refusals import RecentRefusals
from storefront.buy.verdicts import Granted, NotActive, SoldOut, Verdict
from storefront.errors import DropNotFound, GateBusy

log = logging.getLogger("livesell.storefront.gate")

# keys of a gate outlive the drop's end by this long, then Redis forgets them
GATE_TTL_AFTER_END = timedelta(days=1)
MISSING_DROP_TTL_MS = 5_000
BUILD_LOCK_MS = 10_000
BUILD_WAIT_S = 3.0
# redis-py's pool refuses (rather than queues) calls beyond its max_connections; the gate's
# other calls (release, learn, build) wait here instead, leaving connections for everything
# else (acquire and commit are bounded by core.scripts.Batched's round trips in flight)
MAX_CONCURRENT_CALLS = 128


def gate_keys(drop_id: int) -> list[str]:
    tag = f"{{drop:{drop_id}}}"
    return [f"{tag}:gate", f"{tag}:free", f"{tag}:buyers", f"{tag}:idem", f"{tag}:inflight"]


def lock_key(drop_id: int) -> str:
    return f"{{drop:{drop_id}}}:lock"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# the one place gate_acquire.lua's replies are decoded
_verdict = msgspec.json.Decoder(Verdict)


@dataclass(frozen=True)
class Probe:
    gen: str | None
    version: int
    free: int
    in_flight: int
    oldest_in_flight_ms: int


class Gate:
    """The Redis side of the buy path; one per process (`Shop.gate`)."""

    def __init__(self, client: RedisClient) -> None:
        self.redis = client
        self._acquire = Batched(client, register(client, "storefront.buy", "gate_acquire"))
        self._commit = Batched(client, register(client, "storefront.buy", "gate_commit"))
        self._release = register(client, "storefront.buy", "gate_release")
        self._build = register(client, "storefront.buy", "gate_build")
        self._unlock = register(client, "storefront.buy", "gate_unlock")
        self._probe = register(client, "storefront.buy", "gate_probe")
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        # refusals proven by a recent snapshot are answered without a Redis call
        self.recent = RecentRefusals(client, gate_keys)

    async def acquire(
        self,
        drop_id: int,
        buyer_id: str,
        quantity: int,
        *,
        digest: str = "",
        fingerprint: str = "",
        mode: Literal["buy", "late"] = "buy",
    ) -> Verdict:
        """The gate's verdict on one attempt. A refusal a recent snapshot proves is answered
        without asking Redis; `mode="late"` (a payment for an expired hold) only takes free
        units, whatever the sale window and the buyer's limit say."""
        if mode == "buy":
            known = self.recent.refusal(drop_id, buyer_id, quantity, digest)
            if known is None and await self.recent.settled(drop_id):
                known = self.recent.refusal(drop_id, buyer_id, quantity, digest)
            if known is not None:
                return known
        token = secrets.token_hex(8)
        keys = gate_keys(drop_id)
        reply = await self._acquire(keys, [buyer_id, quantity, digest, fingerprint, token, mode])
        verdict = _verdict.decode(reply)
        if mode == "buy" and isinstance(verdict, SoldOut | NotActive):
            async with self._slots:
                await self.recent.learn(drop_id)
        return verdict

    async def commit(
        self, drop_id: int, granted: Granted, *, digest: str = "", fingerprint: str = ""
    ) -> None:
        await self._commit(
            gate_keys(drop_id), [granted.token, granted.gen, digest, fingerprint, *granted.units]
        )

    async def release(
        self,
        drop_id: int,
        buyer_id: str,
        units: list[int],
        *,
        count: int | None = None,
        granted: Granted | None = None,
        digest: str = "",
    ) -> bool:
        """Put `units` back on sale and take `count` (default: len(units)) off the buyer."""
        token, gen = (granted.token, granted.gen) if granted is not None else ("", "")
        try:
            async with self._slots:
                done = await self._release(
                    keys=gate_keys(drop_id),
                    args=[
                        token,
                        gen,
                        buyer_id,
                        len(units) if count is None else count,
                        digest,
                        *units,
                    ],
                )
        finally:
            # snapshots read before the units were back must not refuse attempts on them
            self.recent.forget(drop_id)
        return bool(done)

    async def close(self, drop_id: int) -> None:
        """Refuse further attempts at once (the drop row is closed already)."""
        gate = gate_keys(drop_id)[0]
        if await self.redis.exists(gate):
            await self.redis.hset(gate, "closed", "1")
        self.recent.forget(drop_id)

    async def probe(self, drop_id: int) -> Probe:
        gen, version, free, in_flight, oldest = await self._probe(keys=gate_keys(drop_id), args=[])
        return Probe(
            gen=_text(gen) if gen else None,
            version=int(version),
            free=int(free),
            in_flight=int(in_flight),
            oldest_in_flight_ms=int(oldest),
        )

    async def mark_missing(self, drop_id: int) -> None:
        gate = gate_keys(drop_id)[0]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(gate, "missing", "1")
            pipe.pexpire(gate, MISSING_DROP_TTL_MS)
            await pipe.execute()

    async def build(self, pool: asyncpg.Pool, drop_id: int) -> bool:
        """Build a missing gate from PostgreSQL (DropNotFound when the drop does not exist).

        One process builds under a lock; the others wait for it. Returns True when a gate is
        present afterwards."""
        lock = lock_key(drop_id)
        owner = secrets.token_hex(8)
        async with self._slots:
            locked = await self.redis.set(lock, owner, nx=True, px=BUILD_LOCK_MS)
        if locked:
            try:
                snapshot = await read_snapshot(pool, drop_id)
                if snapshot is None:
                    await self.mark_missing(drop_id)
                    raise DropNotFound(drop_id)
                reply = await self._build(
                    keys=gate_keys(drop_id),
                    args=["fresh", "", "", secrets.token_hex(6), *snapshot.args(0)],
                )
                if _text(reply[0]) == "built":
                    self.recent.forget(drop_id)
                    log.info("gate of drop %d built from PostgreSQL", drop_id)
                return True
            finally:
                await self._unlock(keys=[lock], args=[owner])
        deadline = time.monotonic() + BUILD_WAIT_S
        gate = gate_keys(drop_id)[0]
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            async with self._slots:
                if await self.redis.exists(gate):
                    return True
        raise GateBusy(drop_id)

    async def reconcile(self, pool: asyncpg.Pool, drop_id: int, *, stale_after_s: float) -> str:
        """Rebuild the gate in place from PostgreSQL, keeping attempts in flight younger than
        `stale_after_s` and dropping older ones (their process died between gate and write).
        Returns "built", "absent" (no gate: nothing done) or "changed" (the gate moved while
        PostgreSQL was read; try again later)."""
        probe = await self.probe(drop_id)
        if probe.gen is None:
            return "absent"
        snapshot = await read_snapshot(pool, drop_id)
        if snapshot is None:
            return "absent"
        reply = await self._build(
            keys=gate_keys(drop_id),
            args=[
                "reconcile",
                probe.gen,
                str(probe.version),
                "",
                *snapshot.args(int(time.time() * 1000 - stale_after_s * 1000)),
            ],
        )
        verdict = _text(reply[0])
        if verdict == "built":
            self.recent.forget(drop_id)
        if verdict == "built" and int(reply[2]):
            log.warning("drop %d: %d abandoned attempts healed", drop_id, int(reply[2]))
        return verdict


@dataclass
class Snapshot:
    """What PostgreSQL says about a drop's stock, read in one consistent snapshot."""

    starts_at: datetime
    ends_at: datetime
    closed: bool
    per_buyer_limit: int
    quantity: int
    claimed: list[int]
    buyers: dict[str, int]
    fingerprints: dict[str, str]

    def args(self, stale_before_ms: int) -> list[str]:
        drop = {
            "starts_ms": _ms(self.starts_at),
            "ends_ms": _ms(self.ends_at),
            "closed": 1 if self.closed else 0,
            "limit": self.per_buyer_limit,
            "quantity": self.quantity,
            "expire_at_ms": _ms(self.ends_at + GATE_TTL_AFTER_END),
        }
        encode = msgspec.json.encode
        return [
            encode(drop).decode(),
            encode(self.claimed).decode(),
            # an empty dict must still encode as a JSON object for cjson
            encode(self.buyers).decode(),
            encode(self.fingerprints).decode(),
            str(stale_before_ms),
        ]


async def read_snapshot(pool: asyncpg.Pool, drop_id: int) -> Snapshot | None:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        drop = await conn.fetchrow(
            """SELECT starts_at, ends_at, closed_at, per_buyer_limit, quantity
               FROM drops WHERE id = $1""",
            drop_id,
        )
        if drop is None:
            return None
        claimed = await conn.fetch(
            "SELECT unit_no FROM stock_claims WHERE drop_id = $1 AND state <> 'released'",
            drop_id,
        )
        buyers = await conn.fetch(
            "SELECT buyer_id, live_units FROM drop_buyers WHERE drop_id = $1 AND live_units > 0",
            drop_id,
        )
        keys = await conn.fetch(
            "SELECT buyer_id, key, fingerprint FROM idempotency_keys WHERE drop_id = $1", drop_id
        )
    return Snapshot(
        starts_at=drop["starts_at"],
        ends_at=drop["ends_at"],
        closed=drop["closed_at"] is not None,
        per_buyer_limit=drop["per_buyer_limit"],
        quantity=drop["quantity"],
        claimed=[r["unit_no"] for r in claimed],
        buyers={r["buyer_id"]: r["live_units"] for r in buyers},
        fingerprints={
            idempotency_digest(r["buyer_id"], r["key"]): bytes(r["fingerprint"]).hex() for r in keys
        },
    )
