"""Coupons in PostgreSQL: release, claim (behind the gate), list, and the check at a buy.

A claim, read top to bottom in `claim`: the Idempotency-Key and the request's fingerprint; the
gate (storefront.coupons.gate) decides in Redis, losers stop there; a winner's claim is
written in one transaction (its number, unique per coupon, and the user's count under the
per-user CHECK); after commit the gate hears the number is taken and the room hears the
latest `coupon.remaining`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import timedelta

import asyncpg
import msgspec

from core.db import Conn
from core.errors import ProductNotFound
from core.events import Outbox
from storefront.coupons import gate as verdicts
from storefront.coupons.gate import claim_digest
from storefront.coupons.views import (
    ClaimView,
    CouponList,
    CouponReleased,
    CouponRemaining,
    CouponStatus,
    CouponView,
    MyClaim,
    MyClaims,
    NewCoupon,
)
from storefront.errors import (
    CouponClaimNotFound,
    CouponClaimUsed,
    CouponGateBusy,
    CouponInvalid,
    CouponLimitReached,
    CouponNotActive,
    CouponNotApplicable,
    CouponNotFound,
    CouponsGone,
    IdempotencyMismatch,
)
from storefront.shop import Shop

log = logging.getLogger("livesell.storefront.coupons")

# a gate rebuilt under an attempt, or a number PostgreSQL already shows claimed, sends the
# attempt round again
MAX_ROUNDS = 6

_COUPON = """
SELECT c.*, c.quantity - (SELECT count(*) FROM coupon_claims k WHERE k.coupon_id = c.id)
       AS remaining, now() AS now
FROM coupons c
"""


def _status(row: asyncpg.Record) -> CouponStatus:
    if row["now"] < row["claim_starts_at"]:
        return "scheduled"
    if row["now"] >= row["claim_ends_at"]:
        return "ended"
    return "active" if row["remaining"] > 0 else "gone"


def coupon_view(row: asyncpg.Record) -> CouponView:
    return CouponView(
        id=str(row["id"]),
        room_id=str(row["room_id"]),
        product_id=None if row["product_id"] is None else str(row["product_id"]),
        title=row["title"],
        amount_off_cents=row["amount_off_cents"],
        percent_off_bps=row["percent_off_bps"],
        min_spend_cents=row["min_spend_cents"],
        quantity=row["quantity"],
        per_user_limit=row["per_user_limit"],
        claim_starts_at=row["claim_starts_at"],
        claim_ends_at=row["claim_ends_at"],
        valid_s=int(row["valid_for"].total_seconds()),
        remaining=int(row["remaining"]),
        status=_status(row),
    )


async def create_coupon(
    conn: Conn, outbox: Outbox, room_id: int, body: NewCoupon, created_by: str
) -> CouponView:
    """Insert a coupon in the caller's transaction (the room is the caller's to check);
    `coupon.released` goes on `outbox`."""
    if (body.amount_off_cents is None) == (body.percent_off_bps is None):
        raise CouponInvalid("give exactly one of amount_off_cents and percent_off_bps")
    if body.per_user_limit > body.quantity:
        raise CouponInvalid("per_user_limit cannot exceed quantity")
    product_id = None if body.product_id is None else int(body.product_id)
    if product_id is not None and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)", product_id
    ):
        raise ProductNotFound(product_id)
    coupon_id = await conn.fetchval(
        """INSERT INTO coupons (room_id, product_id, title, amount_off_cents, percent_off_bps,
                                min_spend_cents, quantity, per_user_limit, claim_starts_at,
                                claim_ends_at, valid_for, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::interval,
                   now() + $9::interval + $10::interval, $11, $12)
           RETURNING id""",
        room_id,
        product_id,
        body.title,
        body.amount_off_cents,
        body.percent_off_bps,
        body.min_spend_cents,
        body.quantity,
        body.per_user_limit,
        timedelta(seconds=body.claim_starts_in_s),
        timedelta(seconds=body.claim_duration_s),
        timedelta(seconds=body.valid_s),
        created_by,
    )
    row = await conn.fetchrow(_COUPON + " WHERE c.id = $1", coupon_id)
    assert row is not None  # inserted just now, in this transaction
    view = coupon_view(row)
    outbox.room(room_id, CouponReleased(coupon=view, remaining=view.remaining))
    return view


async def room_coupons(conn: Conn, room_id: int, *, claimable_only: bool = False) -> CouponList:
    """The room's coupons, newest first (only those still claimable or soon to be)."""
    where = " WHERE c.room_id = $1"
    if claimable_only:
        where += " AND c.claim_ends_at > now()"
    rows = await conn.fetch(_COUPON + where + " ORDER BY c.id DESC LIMIT 50", room_id)
    return CouponList(coupons=[coupon_view(r) for r in rows])


async def coupon(conn: Conn, coupon_id: int) -> CouponView:
    row = await conn.fetchrow(_COUPON + " WHERE c.id = $1", coupon_id)
    if row is None:
        raise CouponNotFound(coupon_id)
    return coupon_view(row)


# ---- claims -------------------------------------------------------------------------------


class _Attempt(msgspec.Struct, frozen=True):
    coupon_id: int
    room_id: int
    user_id: str
    key: str
    fingerprint: bytes

    @property
    def digest(self) -> str:
        return claim_digest(self.user_id, self.key)


def fingerprint(path: str) -> bytes:
    """What makes two claims "the same": method and path (a claim's body holds nothing)."""
    return hashlib.sha256(b"POST\n" + path.encode()).digest()


async def room_of(shop: Shop, coupon_id: int) -> int:
    """The coupon's room (its gate's hash tag); CouponNotFound when there is no such coupon."""
    async with shop.res.pool.acquire() as conn:
        room_id = await conn.fetchval("SELECT room_id FROM coupons WHERE id = $1", coupon_id)
    if room_id is None:
        raise CouponNotFound(coupon_id)
    return int(room_id)


async def claim(
    shop: Shop, coupon_id: int, user_id: str, key: str, request_fingerprint: bytes
) -> tuple[ClaimView, bool]:
    """One claim attempt: the claim and whether it replays an earlier answer; raises the
    error a loser gets."""
    attempt = _Attempt(coupon_id, await room_of(shop, coupon_id), user_id, key,
                       request_fingerprint)  # fmt: skip
    gate = shop.coupons
    for _ in range(MAX_ROUNDS):
        verdict = await gate.acquire(
            attempt.room_id,
            coupon_id,
            user_id,
            digest=attempt.digest,
            fingerprint=request_fingerprint.hex(),
        )
        match verdict:
            case verdicts.Granted():
                written = await _write(shop, attempt, verdict)
                if written is not None:
                    return written, False
            case verdicts.Absent():
                await gate.build(shop.res.pool, attempt.room_id, coupon_id)
            case verdicts.Missing():
                raise CouponNotFound(coupon_id)
            case verdicts.Replay(fingerprint=stored) if stored != request_fingerprint.hex():
                raise IdempotencyMismatch(key)
            case verdicts.Replay():
                return await _replay(shop, attempt), True
            case verdicts.Gone():
                raise CouponsGone(coupon_id)
            case verdicts.NotActive(status=status):
                raise CouponNotActive(coupon_id, status)
            case verdicts.LimitReached(limit=limit):
                raise CouponLimitReached(coupon_id, limit)
    raise CouponGateBusy(coupon_id)


_INSERT_CLAIM = """
WITH c AS (
    SELECT id, quantity, per_user_limit, valid_for, claim_starts_at, claim_ends_at
    FROM coupons WHERE id = $1 AND now() >= claim_starts_at AND now() < claim_ends_at
), counted AS (
    INSERT INTO coupon_users (coupon_id, user_id, per_user_limit, claims)
    SELECT id, $2, per_user_limit, 1 FROM c
    ON CONFLICT (coupon_id, user_id) DO UPDATE SET claims = coupon_users.claims + 1
    RETURNING claims
)
INSERT INTO coupon_claims (coupon_id, coupon_quantity, claim_no, user_id, idempotency_key,
                           fingerprint, expires_at)
SELECT c.id, c.quantity, $3, $2, $4, $5, now() + c.valid_for FROM c, counted
RETURNING id, expires_at
"""


async def _write(shop: Shop, attempt: _Attempt, granted: verdicts.Granted) -> ClaimView | None:
    """Write a gate winner's claim and tell the room; on refusal give the number back. None
    when the number turned out to be claimed already (the caller tries again)."""
    try:
        async with shop.res.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                _INSERT_CLAIM,
                attempt.coupon_id,
                attempt.user_id,
                granted.claim_no,
                attempt.key,
                attempt.fingerprint,
            )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "coupon_claims_user_id_idempotency_key_key":
            await _give_back(shop, attempt, granted, digest="")
            return await _replay(shop, attempt)
        # the number is claimed in PostgreSQL (a rebuild read it before that commit): it stays
        # out of the free set, and the attempt goes round again
        await _give_back(shop, attempt, granted, number_back=False)
        return None
    except asyncpg.CheckViolationError:
        await _give_back(shop, attempt, granted)
        limit = await _limit(shop, attempt.coupon_id)
        raise CouponLimitReached(attempt.coupon_id, limit) from None
    except BaseException:
        await _give_back(shop, attempt, granted)
        raise
    if row is None:
        # outside the claim window by PostgreSQL's clock
        await _give_back(shop, attempt, granted)
        view = await _coupon_now(shop, attempt.coupon_id)
        status = "scheduled" if view.status == "scheduled" else "ended"
        raise CouponNotActive(attempt.coupon_id, status)
    shop.res.after_commit.soon(
        _after_commit(shop, attempt, granted), what=f"claim of coupon {attempt.coupon_id}"
    )
    return ClaimView(
        claim_id=str(row["id"]), coupon_id=str(attempt.coupon_id), expires_at=row["expires_at"]
    )


async def _after_commit(shop: Shop, attempt: _Attempt, granted: verdicts.Granted) -> None:
    try:
        left = await shop.coupons.commit(
            attempt.room_id,
            attempt.coupon_id,
            granted,
            digest=attempt.digest,
            fingerprint=attempt.fingerprint.hex(),
        )
        if left < 0:
            return
        quantity = await shop.coupons.redis.hget(
            f"{{room:{attempt.room_id}}}:coupon:{attempt.coupon_id}:gate", "quantity"
        )
        outbox = Outbox()
        outbox.room(
            attempt.room_id,
            CouponRemaining(
                coupon_id=str(attempt.coupon_id), quantity=int(quantity or 0), remaining=left
            ),
        )
        await outbox.flush(shop.res.publisher)
    except Exception as exc:  # noqa: BLE001 - the claim exists; the next one announces again
        log.warning("coupon %d: the gate did not hear of a claim: %r", attempt.coupon_id, exc)


async def _give_back(
    shop: Shop,
    attempt: _Attempt,
    granted: verdicts.Granted,
    *,
    number_back: bool = True,
    digest: str | None = None,
) -> None:
    try:
        await asyncio.shield(
            shop.coupons.release(
                attempt.room_id,
                attempt.coupon_id,
                attempt.user_id,
                granted,
                number_back=number_back,
                digest=attempt.digest if digest is None else digest,
            )
        )
    except Exception as exc:  # noqa: BLE001 - a rebuild from PostgreSQL puts it right
        log.warning("coupon %d: number not returned to the gate: %r", attempt.coupon_id, exc)


async def _limit(shop: Shop, coupon_id: int) -> int:
    async with shop.res.pool.acquire() as conn:
        return int(
            await conn.fetchval("SELECT per_user_limit FROM coupons WHERE id = $1", coupon_id)
        )


async def _coupon_now(shop: Shop, coupon_id: int) -> CouponView:
    async with shop.res.pool.acquire() as conn:
        return await coupon(conn, coupon_id)


async def _replay(shop: Shop, attempt: _Attempt) -> ClaimView:
    async with shop.res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT id, coupon_id, fingerprint, expires_at FROM coupon_claims
               WHERE user_id = $1 AND idempotency_key = $2""",
            attempt.user_id,
            attempt.key,
        )
    if row is None:
        # the gate remembers a key PostgreSQL does not (an attempt still in flight)
        raise CouponGateBusy(attempt.coupon_id)
    if bytes(row["fingerprint"]) != attempt.fingerprint:
        raise IdempotencyMismatch(attempt.key)
    return ClaimView(
        claim_id=str(row["id"]), coupon_id=str(row["coupon_id"]), expires_at=row["expires_at"]
    )


# ---- the buyer's claims, and a claim at a buy -----------------------------------------------

_USABLE = """
SELECT k.id, k.coupon_id, k.claimed_at, k.expires_at, c.room_id, c.product_id, c.title,
       c.amount_off_cents, c.percent_off_bps, c.min_spend_cents
FROM coupon_claims k JOIN coupons c ON c.id = k.coupon_id
WHERE k.user_id = $1 AND k.expires_at > now()
  AND NOT EXISTS (SELECT 1 FROM orders o
                  WHERE o.coupon_claim_id = k.id AND o.status <> 'expired')
ORDER BY k.expires_at, k.id
LIMIT 200
"""


async def my_claims(conn: Conn, user_id: str) -> MyClaims:
    return MyClaims(
        claims=[
            MyClaim(
                claim_id=str(r["id"]),
                coupon_id=str(r["coupon_id"]),
                room_id=str(r["room_id"]),
                product_id=None if r["product_id"] is None else str(r["product_id"]),
                title=r["title"],
                amount_off_cents=r["amount_off_cents"],
                percent_off_bps=r["percent_off_bps"],
                min_spend_cents=r["min_spend_cents"],
                claimed_at=r["claimed_at"],
                expires_at=r["expires_at"],
            )
            for r in await conn.fetch(_USABLE, user_id)
        ]
    )


_CHECK = """
SELECT k.expires_at <= now() AS expired, c.room_id, c.product_id, c.min_spend_cents,
       d.room_id AS drop_room, d.product_id AS drop_product, d.price_cents,
       EXISTS (SELECT 1 FROM orders o
               WHERE o.coupon_claim_id = k.id AND o.status <> 'expired') AS used,
       EXISTS (SELECT 1 FROM idempotency_keys i WHERE i.buyer_id = $2 AND i.key = $4)
           AS replay
FROM coupon_claims k JOIN coupons c ON c.id = k.coupon_id
LEFT JOIN drops d ON d.id = $3
WHERE k.id = $1 AND k.user_id = $2
"""


async def check_claim(
    shop: Shop, claim_id: int, buyer_id: str, drop_id: int, quantity: int, key: str
) -> None:
    """Before a buy takes stock: refuse a claim that cannot apply to this order. (The order's
    own statement checks again, and its unique index refuses a claim used meanwhile.) A replay
    of a buy that was placed (its Idempotency-Key stored) passes: it gets its first answer."""
    async with shop.res.pool.acquire() as conn:
        row = await conn.fetchrow(_CHECK, claim_id, buyer_id, drop_id, key)
    if row is None:
        raise CouponClaimNotFound(claim_id)
    if row["drop_room"] is None or row["replay"]:
        return  # no such drop (drop_not_found follows), or a replay
    if row["used"]:
        raise CouponClaimUsed(claim_id)
    if row["expired"]:
        raise CouponNotApplicable(claim_id, "the claim has expired")
    if row["room_id"] != row["drop_room"]:
        raise CouponNotApplicable(claim_id, "the coupon is for another room")
    if row["product_id"] is not None and row["product_id"] != row["drop_product"]:
        raise CouponNotApplicable(claim_id, "the coupon is for another product")
    if row["price_cents"] * quantity < row["min_spend_cents"]:
        raise CouponNotApplicable(
            claim_id, f"the order does not reach the minimum spend of {row['min_spend_cents']}"
        )
