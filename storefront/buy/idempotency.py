"""Idempotent buys, as Stripe does them.

The first request with a key stores its response (in the same transaction as the order); a
replay returns those exact bytes; the same key with a different request is a 422. A duplicate
arriving while the first is still being written waits for its result (up to REPLAY_WAIT_S, then
409 `idempotency_in_progress`), so duplicates make one order. Refusals (sold out, limit, not
active) are not stored: they never reached PostgreSQL, and a retry with the same key may succeed
once stock comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec

from core.resources import Resources
from storefront.errors import IdempotencyInProgress, IdempotencyKeyRequired, IdempotencyMismatch
from storefront.views import BuyRequest, BuyResult

HEADER = "Idempotency-Key"
# 1 to 255 visible ASCII characters, spaces inside allowed (the same in Python and ECMA regexes)
KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$(?!\n)"
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=KEY_PATTERN)]
_KEY = re.compile(KEY_PATTERN)
REPLAY_WAIT_S = 3.0

_encode = msgspec.json.Encoder().encode


def idempotency_key(raw: str | None) -> str:
    """The Idempotency-Key header's value (`IdempotencyKey`), or IdempotencyKeyRequired."""
    if raw is None or len(raw) > 255 or _KEY.search(raw) is None:
        raise IdempotencyKeyRequired()
    return raw


class _QuantityOnly(msgspec.Struct):
    quantity: int


def fingerprint(method: str, path: str, body: BuyRequest) -> bytes:
    """What makes two requests "the same": method, path and the canonical body. A body with
    only a quantity is canonical as it was before buys took coupons and codes, so keys stored
    then still match their requests."""
    canonical: msgspec.Struct = body
    if body.coupon_claim_id is None and body.referral_code is None:
        canonical = _QuantityOnly(body.quantity)
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), _encode(canonical)])).digest()


def idempotency_digest(buyer_id: str, key: str) -> str:
    """How the gate remembers a buyer's key (short, and never the key itself)."""
    return hashlib.sha256(f"{buyer_id}\0{key}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    replayed: bool = False


def held(
    order_id: int, hold_expires_at: datetime, amount_cents: int, *, replayed: bool = False
) -> StoredResponse:
    """A buy's 201, rendered from what the Idempotency-Key's row stores (so a replay renders the
    same bytes)."""
    result = BuyResult(
        order_id=str(order_id),
        status="held",
        hold_expires_at=hold_expires_at,
        amount_cents=amount_cents,
    )
    return StoredResponse(201, _encode(result), replayed)


async def replay(res: Resources, buyer_id: str, key: str, fp: bytes) -> StoredResponse:
    """The stored response of an earlier request with this key, waiting for it if needed."""
    deadline = asyncio.get_running_loop().time() + REPLAY_WAIT_S
    while True:
        async with res.pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT fingerprint, order_id, hold_expires_at, amount_cents
                   FROM idempotency_keys WHERE buyer_id = $1 AND key = $2""",
                buyer_id,
                key,
            )
        if row is not None:
            if bytes(row["fingerprint"]) != fp:
                raise IdempotencyMismatch(key)
            return held(row["order_id"], row["hold_expires_at"], row["amount_cents"], replayed=True)
        if asyncio.get_running_loop().time() >= deadline:
            raise IdempotencyInProgress(key)
        await asyncio.sleep(0.025)
