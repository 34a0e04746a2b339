"""The coupon gate: Redis in front of PostgreSQL, one Lua script per claim attempt.

The flash-sale gate's design (storefront.buy.gate) for coupons. Every key of coupon 3 in room 7
shares the room's hash tag (one Redis Cluster slot, with the room's other keys):

    {room:7}:coupon:3:gate   hash  gen (build id), v (mutation counter), starts_ms, ends_ms,
                                   limit, quantity, expire_at_ms; or `missing` (briefly)
    {room:7}:coupon:3:free   set   claim numbers nobody holds
    {room:7}:coupon:3:users  hash  user id -> claims the gate counts as theirs
    {room:7}:coupon:3:idem   hash  digest(user, Idempotency-Key) -> request fingerprint (hex)
    {room:7}:coupon:3:lock   string  held while one process builds the gate from PostgreSQL

Losers never reach PostgreSQL. The gate is only an optimisation: PostgreSQL's unique claim
number per coupon (1..quantity, CHECKed) and the per-user CHECK refuse whatever a wrong gate
lets through, so losing Redis can leave coupons unclaimed until the gate is rebuilt from
PostgreSQL, but never over-issues them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from datetime import datetime, timedelta
from typing import ClassVar, Literal

import asyncpg
import msgspec

from core.redis_client import RedisClient
from core.scripts import Batched, register
from storefront.errors import CouponGateBusy, CouponNotFound

GATE_TTL_AFTER_END = timedelta(days=1)
MISSING_TTL_MS = 5_000
BUILD_LOCK_MS = 10_000
BUILD_WAIT_S = 3.0


class Granted(msgspec.Struct, tag="ok", tag_field="verdict", frozen=True):
    """A claim number handed to this attempt, until its claim commits (or it goes back)."""

    gen: str
    claim_no: int


class Gone(msgspec.Struct, tag="gone", tag_field="verdict", frozen=True):
    reason: ClassVar[str] = "gone"


class NotActive(msgspec.Struct, tag="not_active", tag_field="verdict", frozen=True):
    status: Literal["scheduled", "ended"]


class LimitReached(msgspec.Struct, tag="limit_reached", tag_field="verdict", frozen=True):
    limit: int


class Replay(msgspec.Struct, tag="seen", tag_field="verdict", frozen=True):
    fingerprint: str


class Absent(msgspec.Struct, tag="absent", tag_field="verdict", frozen=True):
    """No gate in Redis: build it from PostgreSQL, then ask again."""


class Missing(msgspec.Struct, tag="missing", tag_field="verdict", frozen=True):
    """No such coupon (remembered for MISSING_TTL_MS)."""


Verdict = Granted | Gone | NotActive | LimitReached | Replay | Absent | Missing

# the one place claim_acquire.lua's replies are decoded
_verdict = msgspec.json.Decoder(Verdict)


def gate_keys(room_id: int, coupon_id: int) -> list[str]:
    base = f"{{room:{room_id}}}:coupon:{coupon_id}"
    return [f"{base}:gate", f"{base}:free", f"{base}:users", f"{base}:idem"]


def claim_digest(user_id: str, key: str) -> str:
    """How the gate remembers a user's Idempotency-Key (short, and never the key itself)."""
    return hashlib.sha256(f"coupon\0{user_id}\0{key}".encode()).hexdigest()[:32]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class CouponGate:
    """The Redis side of coupon claims; one per process (`Shop.coupons`)."""

    def __init__(self, client: RedisClient) -> None:
        self.redis = client
        self._acquire = Batched(client, register(client, "storefront.coupons", "claim_acquire"))
        self._commit = Batched(client, register(client, "storefront.coupons", "claim_commit"))
        self._release = register(client, "storefront.coupons", "claim_release")
        self._build = register(client, "storefront.coupons", "claim_build")
        self._unlock = register(client, "storefront.buy", "gate_unlock")

    async def acquire(
        self, room_id: int, coupon_id: int, user_id: str, *, digest: str, fingerprint: str
    ) -> Verdict:
        reply = await self._acquire(gate_keys(room_id, coupon_id), [user_id, digest, fingerprint])
        return _verdict.decode(reply)

    async def commit(
        self, room_id: int, coupon_id: int, granted: Granted, *, digest: str, fingerprint: str
    ) -> int:
        """The claim committed; the free numbers left (-1: no gate)."""
        left = await self._commit(
            gate_keys(room_id, coupon_id), [granted.gen, granted.claim_no, digest, fingerprint]
        )
        return int(left)

    async def release(
        self,
        room_id: int,
        coupon_id: int,
        user_id: str,
        granted: Granted,
        *,
        number_back: bool = True,
        digest: str = "",
    ) -> None:
        await self._release(
            keys=gate_keys(room_id, coupon_id),
            args=[granted.gen, granted.claim_no if number_back else "", user_id, digest],
        )

    async def build(self, pool: asyncpg.Pool, room_id: int, coupon_id: int) -> None:
        """Build a missing gate from PostgreSQL under a lock; the other processes wait for it.
        CouponNotFound when the coupon does not exist."""
        keys = gate_keys(room_id, coupon_id)
        lock = keys[0].removesuffix(":gate") + ":lock"
        owner = secrets.token_hex(8)
        if await self.redis.set(lock, owner, nx=True, px=BUILD_LOCK_MS):
            try:
                args = await _snapshot_args(pool, coupon_id)
                reply = await self._build(
                    keys=keys, args=[secrets.token_hex(6), *args, MISSING_TTL_MS]
                )
                if (reply.decode() if isinstance(reply, bytes) else reply) == "missing":
                    raise CouponNotFound(coupon_id)
                return
            finally:
                await self._unlock(keys=[lock], args=[owner])
        deadline = time.monotonic() + BUILD_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if await self.redis.exists(keys[0]):
                return
        raise CouponGateBusy(coupon_id)


async def _snapshot_args(pool: asyncpg.Pool, coupon_id: int) -> list[str]:
    """What PostgreSQL says about a coupon's claims, read in one consistent snapshot, as
    claim_build.lua's ARGV[2..5]."""
    encode = msgspec.json.encode
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        coupon = await conn.fetchrow(
            """SELECT claim_starts_at, claim_ends_at, per_user_limit, quantity
               FROM coupons WHERE id = $1""",
            coupon_id,
        )
        if coupon is None:
            return ["", "[]", "{}", "{}"]
        claimed = await conn.fetch(
            "SELECT claim_no, user_id, idempotency_key, fingerprint FROM coupon_claims "
            "WHERE coupon_id = $1",
            coupon_id,
        )
    users: dict[str, int] = {}
    for r in claimed:
        users[r["user_id"]] = users.get(r["user_id"], 0) + 1
    head = {
        "starts_ms": _ms(coupon["claim_starts_at"]),
        "ends_ms": _ms(coupon["claim_ends_at"]),
        "limit": coupon["per_user_limit"],
        "quantity": coupon["quantity"],
        "expire_at_ms": _ms(coupon["claim_ends_at"] + GATE_TTL_AFTER_END),
    }
    return [
        encode(head).decode(),
        encode([r["claim_no"] for r in claimed]).decode(),
        encode(users).decode(),
        encode(
            {
                claim_digest(r["user_id"], r["idempotency_key"]): bytes(r["fingerprint"]).hex()
                for r in claimed
            }
        ).decode(),
    ]
