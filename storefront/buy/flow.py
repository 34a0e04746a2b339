"""One buy, from the HTTP request to the viewers' frames, read top to bottom in `buy`:

1. authenticate: a viewer's token (core.auth), and the per-user and per-address buy limits;
   attribution screens the buyer (their device recorded; a self-referral refused when the
   policy is `reject`);
2. idempotency: the Idempotency-Key and the request's fingerprint (storefront.buy.idempotency);
3. gate: one Lua script in Redis decides (storefront.buy.gate); losers stop here, a replay gets
   the stored response;
4. place: a winner's order, claims, quota, attribution and stored response are written to
   PostgreSQL in one statement, batched with the winners of the same moment
   (storefront.buy.placing);
5. after commit: the buyer gets the 201 at once; the gate hears the units are claimed and the
   room hears the stock moved in the process's after-commit work (core.aftercommit).

A refusal that a recent snapshot of the gate proves is answered before this route
(storefront.buy.early), with the same bytes this route would send.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response

import attribution
from core.errors import LivesellError
from core.http import path_id, read_json, require
from core.ratelimit import Limit, address_subject
from storefront.buy import idempotency, verdicts
from storefront.buy.idempotency import StoredResponse
from storefront.buy.placing import NotPlaced, OrderRequest, Placed
from storefront.coupons.claims import check_claim
from storefront.errors import (
    BuyRateLimited,
    CouponClaimUsed,
    CouponNotApplicable,
    DropNotActive,
    DropNotFound,
    GateBusy,
    IdempotencyMismatch,
    LimitReached,
    SoldOut,
)
from storefront.shop import Shop, shop_of
from storefront.views import BuyRequest

log = logging.getLogger("livesell.storefront.buy")

# a gate rebuilt under an attempt (Redis lost, a reconciliation) sends it round again
MAX_GATE_ROUNDS = 4


async def buy(request: Request) -> Response:
    """`POST /api/drops/{id}/buy`: one attempt at a flash drop."""
    shop = shop_of(request)
    # 1. authenticate
    who = require(request, "viewer")
    drop_id = path_id(request)
    key = idempotency.idempotency_key(request.headers.get(idempotency.HEADER))
    await _within_buy_limits(shop, request, who.user_id)
    body = await read_json(request, BuyRequest)
    referral = None
    if body.referral_code is not None:
        referral = await attribution.lookup_referral_code(
            shop.res,
            body.referral_code,
            user_id=who.user_id,
            client_addr=request.client.host if request.client else None,
        )
    await attribution.screen_buyer(
        shop.res,
        buyer_id=who.user_id,
        drop_id=drop_id,
        device=attribution.device_id(request),
        referrer_user_id=referral.distributor_user_id if referral else None,
    )
    coupon_claim_id = None if body.coupon_claim_id is None else int(body.coupon_claim_id)
    if coupon_claim_id is not None:
        await check_claim(shop, coupon_claim_id, who.user_id, drop_id, body.quantity, key)
    # 2. idempotency
    attempt = _Attempt(
        drop_id=drop_id,
        buyer_id=who.user_id,
        key=key,
        quantity=body.quantity,
        fingerprint=idempotency.fingerprint("POST", request.url.path, body),
        coupon_claim_id=coupon_claim_id,
        referral_code=referral.code if referral else None,
    )
    stored = await attempt_buy(shop, attempt)
    headers = {"Idempotent-Replayed": "true"} if stored.replayed else None
    return Response(stored.body, stored.status, headers=headers, media_type="application/json")


class _Attempt:
    __slots__ = (
        "drop_id",
        "buyer_id",
        "key",
        "quantity",
        "fingerprint",
        "digest",
        "coupon_claim_id",
        "referral_code",
    )

    def __init__(
        self,
        *,
        drop_id: int,
        buyer_id: str,
        key: str,
        quantity: int,
        fingerprint: bytes,
        coupon_claim_id: int | None = None,
        referral_code: str | None = None,
    ) -> None:
        self.coupon_claim_id = coupon_claim_id
        self.referral_code = referral_code
        self.drop_id = drop_id
        self.buyer_id = buyer_id
        self.key = key
        self.quantity = quantity
        self.fingerprint = fingerprint
        self.digest = idempotency.idempotency_digest(buyer_id, key)


async def attempt_buy(shop: Shop, attempt: _Attempt) -> StoredResponse:
    """The gate, then a winner's order; raises the error a loser gets."""
    for _ in range(MAX_GATE_ROUNDS):
        # 3. gate
        verdict = await shop.gate.acquire(
            attempt.drop_id,
            attempt.buyer_id,
            attempt.quantity,
            digest=attempt.digest,
            fingerprint=attempt.fingerprint.hex(),
        )
        match verdict:
            case verdicts.Granted():
                # 4. place, then 5. after commit
                placed = await _place(shop, attempt, verdict)
                if placed is not None:
                    return placed
                # some units were claimed by someone else (a rebuild race): try again
            case verdicts.Absent():
                await shop.gate.build(shop.res.pool, attempt.drop_id)
            case verdicts.Missing():
                raise DropNotFound(attempt.drop_id)
            case verdicts.Replay(fingerprint=stored) if stored != attempt.fingerprint.hex():
                raise IdempotencyMismatch(attempt.key)
            case verdicts.Replay():
                return await _replay(shop, attempt)
            case verdicts.SoldOut() | verdicts.NotActive() | verdicts.LimitReached():
                raise refusal_error(attempt.drop_id, verdict)
    raise GateBusy(attempt.drop_id)


def refusal_error(drop_id: int, refusal: verdicts.Refusal) -> LivesellError:
    """The error a loser gets for a refusal of the gate."""
    match refusal:
        case verdicts.NotActive(status=status):
            return DropNotActive(drop_id, status)
        case verdicts.LimitReached(holding=holding, limit=limit):
            return LimitReached(drop_id, limit, holding)
        case verdicts.SoldOut(free=free):
            return SoldOut(drop_id, free)


async def _within_buy_limits(shop: Shop, request: Request, user_id: str) -> None:
    settings = shop.res.settings
    address = address_subject(request.client.host if request.client else None)
    refused = await shop.res.limiter.hit(
        (Limit("buy-user", settings.buy_rate_per_user), user_id),
        (Limit("buy-ip", settings.buy_rate_per_ip), address),
    )
    if refused is not None:
        subject = "user" if refused.limit.name == "buy-user" else "address"
        raise BuyRateLimited(subject, refused.retry_after_s)


async def _replay(shop: Shop, attempt: _Attempt) -> StoredResponse:
    return await idempotency.replay(shop.res, attempt.buyer_id, attempt.key, attempt.fingerprint)


async def _place(shop: Shop, attempt: _Attempt, granted: verdicts.Granted) -> StoredResponse | None:
    """Write the held order of a gate winner, and answer; on any failure give the units back.
    None when some of the units turned out to be claimed already (the caller tries again)."""
    try:
        placed = await shop.orders.place(
            OrderRequest(
                attempt.drop_id,
                attempt.buyer_id,
                attempt.key,
                attempt.fingerprint,
                granted.units,
                coupon_claim_id=attempt.coupon_claim_id,
                referral_code=attempt.referral_code,
            )
        )
    except BaseException:
        await _give_back(shop, attempt, granted)
        raise
    match placed:
        case Placed():
            # committed: answer now; the gate and the room hear of it after
            shop.res.after_commit.soon(
                _after_commit(shop, attempt, granted), what=f"sale on drop {attempt.drop_id}"
            )
            return idempotency.held(placed.order_id, placed.hold_expires_at, placed.amount_cents)
        case NotPlaced(reason="key_taken"):
            # the key was used meanwhile (a race the gate could not see): that request's answer
            await _give_back(shop, attempt, granted, forget_key=False)
            return await _replay(shop, attempt)
        case NotPlaced(reason="unit_taken"):
            await _give_back_unclaimed(shop, attempt, granted)
            return None
        case NotPlaced(reason="over_limit"):
            await _give_back(shop, attempt, granted)
            raise await _limit_reached(shop, attempt)
        case NotPlaced(reason="coupon_taken") if attempt.coupon_claim_id is not None:
            # another buy applied the claim first (orders_one_per_coupon_claim)
            await _give_back(shop, attempt, granted)
            raise CouponClaimUsed(attempt.coupon_claim_id)
        case NotPlaced(reason="coupon_invalid") if attempt.coupon_claim_id is not None:
            await _give_back(shop, attempt, granted)
            raise CouponNotApplicable(attempt.coupon_claim_id, "it no longer applies")
        case NotPlaced(reason="code_missing"):
            await _give_back(shop, attempt, granted)
            raise attribution.ReferralCodeNotFound(attempt.referral_code or "")
        case NotPlaced(reason="missing"):
            await _give_back(shop, attempt, granted)
            raise DropNotFound(attempt.drop_id)
        case NotPlaced(reason=status):
            await _give_back(shop, attempt, granted)
            if status in ("closed", "ended"):
                # closed in PostgreSQL without the gate hearing of it: later attempts stop there
                await shop.gate.close(attempt.drop_id)
            raise DropNotActive(attempt.drop_id, status)


async def _after_commit(shop: Shop, attempt: _Attempt, granted: verdicts.Granted) -> None:
    try:
        await shop.gate.commit(
            attempt.drop_id, granted, digest=attempt.digest, fingerprint=attempt.fingerprint.hex()
        )
    except Exception as exc:  # noqa: BLE001 - the order exists; reconciliation tidies the gate
        log.warning("drop %d: the gate did not hear of a sale: %r", attempt.drop_id, exc)
    try:
        await shop.stock.changed(attempt.drop_id, sold=True)
    except Exception as exc:  # noqa: BLE001 - the drop's next change announces again
        log.warning("drop %d: stock not announced: %r", attempt.drop_id, exc)


async def _limit_reached(shop: Shop, attempt: _Attempt) -> LimitReached:
    """The buyer's limit as PostgreSQL counts it (the gate's count was behind)."""
    async with shop.res.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT per_buyer_limit, live_units FROM drop_buyers "
            "WHERE drop_id = $1 AND buyer_id = $2",
            attempt.drop_id,
            attempt.buyer_id,
        )
    if row is None:
        return LimitReached(attempt.drop_id, attempt.quantity - 1, 0)
    return LimitReached(attempt.drop_id, row["per_buyer_limit"], row["live_units"])


async def _give_back(
    shop: Shop, attempt: _Attempt, granted: verdicts.Granted, *, forget_key: bool = True
) -> None:
    """Return a failed attempt's units to the gate. Shielded: a cancelled request must not
    strand them (and if this fails, reconciliation returns them later)."""
    try:
        await asyncio.shield(
            shop.gate.release(
                attempt.drop_id,
                attempt.buyer_id,
                granted.units,
                granted=granted,
                digest=attempt.digest if forget_key else "",
            )
        )
    except Exception as exc:  # noqa: BLE001
        log.warning(
            "drop %d: units %s not returned to the gate: %r", attempt.drop_id, granted.units, exc
        )


async def _give_back_unclaimed(shop: Shop, attempt: _Attempt, granted: verdicts.Granted) -> None:
    """Return only the units PostgreSQL does not already show as claimed; the claimed ones were
    in the free set by mistake and stay out of it."""
    async with shop.res.pool.acquire() as conn:
        claimed = {
            r["unit_no"]
            for r in await conn.fetch(
                """SELECT unit_no FROM stock_claims
                   WHERE drop_id = $1 AND unit_no = ANY($2::integer[]) AND state <> 'released'""",
                attempt.drop_id,
                granted.units,
            )
        }
    free = [u for u in granted.units if u not in claimed]
    log.warning(
        "drop %d: gate handed out claimed units %s; dropped them", attempt.drop_id, sorted(claimed)
    )
    await shop.gate.release(
        attempt.drop_id,
        attempt.buyer_id,
        free,
        count=len(granted.units),
        granted=granted,
        digest=attempt.digest,
    )
