"""The buy path: Idempotency-Key, the Redis gate, then each winner's order written to PostgreSQL
(storefront.placing: winners arriving together share one statement and one commit).

Idempotency follows Stripe: the first request with a key stores its response (in the same
transaction as the order); a replay returns those exact bytes; the same key with a different
request is a 422. A duplicate arriving while the first is still being written waits for its
result (up to REPLAY_WAIT_S, then 409 `idempotency_in_progress`), so duplicates make one order.
Refusals (sold out, limit, not active) are not stored: they never reached PostgreSQL, and a
retry with the same key may succeed once stock comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass

import msgspec

from core.errors import LivesellError
from core.resources import Resources
from storefront import verdicts
from storefront.errors import (
    DropNotActive,
    DropNotFound,
    GateBusy,
    IdempotencyInProgress,
    IdempotencyMismatch,
    LimitReached,
    SoldOut,
)
from storefront.gate import Gate, idempotency_digest
from storefront.placing import OrderRequest, Placed, writer_of
from storefront.stock import announcer_of, in_background
from storefront.stock import drain_background as drain_stock_work
from storefront.views import BuyRequest

log = logging.getLogger("livesell.storefront.checkout")

REPLAY_WAIT_S = 3.0
MAX_GATE_ROUNDS = 4

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    replayed: bool = False


def fingerprint(method: str, path: str, body: BuyRequest) -> bytes:
    """What makes two requests "the same": method, path and the canonical body."""
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), _encode(body)])).digest()


async def buy(
    res: Resources,
    gate: Gate,
    *,
    drop_id: int,
    buyer_id: str,
    key: str,
    request: BuyRequest,
    path: str,
) -> StoredResponse:
    """One buy attempt; raises the storefront error a loser gets, or returns the 201 response."""
    fp = fingerprint("POST", path, request)
    digest = idempotency_digest(buyer_id, key)
    for _ in range(MAX_GATE_ROUNDS):
        outcome = await gate.acquire(
            drop_id, buyer_id, request.quantity, digest=digest, fingerprint=fp.hex()
        )
        match outcome:
            case verdicts.Granted():
                placed = await _place_order(res, gate, drop_id, buyer_id, key, fp, digest, outcome)
                if placed is not None:
                    return placed
                # some units were claimed by someone else (a rebuild race): try again
            case verdicts.Absent():
                await gate.build(res.pool, drop_id)
            case verdicts.Missing():
                raise DropNotFound(drop_id)
            case verdicts.Replay(fingerprint=stored) if stored != fp.hex():
                raise IdempotencyMismatch(key)
            case verdicts.Replay():
                return await _replay(res, buyer_id, key, fp)
            case verdicts.SoldOut() | verdicts.NotActive() | verdicts.LimitReached():
                raise refusal_error(drop_id, outcome)
    raise GateBusy(drop_id)


def refusal_error(drop_id: int, refusal: verdicts.Refusal) -> LivesellError:
    """The error a loser gets for a refusal of the gate."""
    match refusal:
        case verdicts.NotActive(status=status):
            return DropNotActive(drop_id, status)
        case verdicts.LimitReached(holding=holding, limit=limit):
            return LimitReached(drop_id, limit, holding)
        case verdicts.SoldOut(free=free):
            return SoldOut(drop_id, free)


async def _replay(res: Resources, buyer_id: str, key: str, fp: bytes) -> StoredResponse:
    """The stored response of an earlier request with this key, waiting for it if needed."""
    deadline = asyncio.get_running_loop().time() + REPLAY_WAIT_S
    while True:
        async with res.pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT fingerprint, response_status, response_body FROM idempotency_keys
                   WHERE buyer_id = $1 AND key = $2""",
                buyer_id,
                key,
            )
        if row is not None:
            if bytes(row["fingerprint"]) != fp:
                raise IdempotencyMismatch(key)
            return StoredResponse(row["response_status"], bytes(row["response_body"]), True)
        if asyncio.get_running_loop().time() >= deadline:
            raise IdempotencyInProgress(key)
        await asyncio.sleep(0.025)


class _KeyTaken(Exception):
    """The idempotency key already has a stored response (a race the gate could not see)."""


class _UnitsTaken(Exception):
    """Some granted units already carry a live claim in PostgreSQL."""


async def _place_order(
    res: Resources,
    gate: Gate,
    drop_id: int,
    buyer_id: str,
    key: str,
    fp: bytes,
    digest: str,
    granted: verdicts.Granted,
) -> StoredResponse | None:
    """Write the held order for a gate winner; on any failure give the units back."""
    quantity = len(granted.units)
    committed = False
    try:
        placed = await writer_of(res).place(OrderRequest(drop_id, buyer_id, key, fp, granted.units))
        response = _response(drop_id, placed)
        committed = True
    except _KeyTaken:
        await _give_back(gate, drop_id, buyer_id, granted)
        return await _replay(res, buyer_id, key, fp)
    except _UnitsTaken:
        await _give_back_unclaimed(res, gate, drop_id, buyer_id, granted, digest)
        return None
    except LimitReached:
        await _give_back(gate, drop_id, buyer_id, granted, digest)
        async with res.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT per_buyer_limit, live_units FROM drop_buyers "
                "WHERE drop_id = $1 AND buyer_id = $2",
                drop_id,
                buyer_id,
            )
        limit = row["per_buyer_limit"] if row else quantity - 1
        raise LimitReached(drop_id, limit, row["live_units"] if row else 0) from None
    except DropNotActive as exc:
        await _give_back(gate, drop_id, buyer_id, granted, digest)
        if exc.details.get("status") in ("closed", "ended"):
            # closed in PostgreSQL without the gate hearing of it: later attempts stop at Redis
            await gate.close(drop_id)
        raise
    except BaseException:
        if not committed:
            await _give_back(gate, drop_id, buyer_id, granted, digest)
        raise
    # the order is committed: answer now; telling the gate and the room can follow
    in_background(_after_commit(res, gate, drop_id, granted, digest, fp))
    return response


async def _after_commit(
    res: Resources,
    gate: Gate,
    drop_id: int,
    granted: verdicts.Granted,
    digest: str,
    fp: bytes,
) -> None:
    try:
        await gate.commit(drop_id, granted, digest=digest, fingerprint=fp.hex())
    except Exception as exc:  # noqa: BLE001 - the order exists; reconciliation tidies the gate
        log.warning("drop %d: after-commit bookkeeping failed: %r", drop_id, exc)
    try:
        # the counts as PostgreSQL sees them now
        await announcer_of(res).changed(res, drop_id, sold=True)
    except Exception as exc:  # noqa: BLE001 - the drop's next change announces again
        log.warning("drop %d: stock not announced: %r", drop_id, exc)


async def drain_background() -> None:
    """Wait for after-commit work still running (tests, shutdown)."""
    await drain_stock_work()


def _response(drop_id: int, placed: Placed) -> StoredResponse:
    """The winner's 201, or the error its order met in PostgreSQL (storefront_place_order)."""
    match placed.outcome:
        case "placed":
            assert placed.body is not None
            return StoredResponse(201, placed.body)
        case "missing":
            raise DropNotFound(drop_id)
        case "unique_violation" if placed.refused_by == "idempotency_keys_pkey":
            raise _KeyTaken()
        case "unique_violation":
            raise _UnitsTaken()
        case "check_violation":
            raise LimitReached(drop_id, 0, 0)
        case status:
            raise DropNotActive(drop_id, status)


async def _give_back(
    gate: Gate, drop_id: int, buyer_id: str, granted: verdicts.Granted, digest: str = ""
) -> None:
    """Return a failed attempt's units to the gate. Shielded: a cancelled request must not
    strand them (and if this fails, reconciliation returns them later)."""
    try:
        await asyncio.shield(
            gate.release(drop_id, buyer_id, granted.units, granted=granted, digest=digest)
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("drop %d: units %s not returned to the gate: %r", drop_id, granted.units, exc)


async def _give_back_unclaimed(
    res: Resources, gate: Gate, drop_id: int, buyer_id: str, granted: verdicts.Granted, digest: str
) -> None:
    """Return only the units PostgreSQL does not already show as claimed; the claimed ones were
    in the free set by mistake and stay out of it."""
    async with res.pool.acquire() as conn:
        claimed = {
            r["unit_no"]
            for r in await conn.fetch(
                """SELECT unit_no FROM stock_claims
                   WHERE drop_id = $1 AND unit_no = ANY($2::integer[]) AND state <> 'released'""",
                drop_id,
                granted.units,
            )
        }
    free = [u for u in granted.units if u not in claimed]
    log.warning("drop %d: gate handed out claimed units %s; dropped them", drop_id, sorted(claimed))
    await gate.release(
        drop_id, buyer_id, free, count=len(granted.units), granted=granted, digest=digest
    )
