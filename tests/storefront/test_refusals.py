"""Refusals remembered for a moment: a storm of losers on a sold-out drop stays in the process,
answers exactly as the gate would, and stock that comes back is buyable again within the bound."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from core.resources import Resources
from storefront import Shop
from storefront.buy import refusals
from storefront.buy.gate import gate_keys
from storefront.buy.idempotency import idempotency_digest
from storefront.buy.refusals import GateState, Snapshot
from storefront.buy.verdicts import LimitReached, NotActive, SoldOut
from storefront.orders import expire_holds
from tests.storefront.conftest import Auth, Buy, StartDrop, new_key, redis_calls, stock_truth


async def _gate_calls(res: Resources) -> int:
    """Script calls Redis has served so far (every buy attempt that reaches the gate is one),
    on every primary of a cluster."""
    calls = await redis_calls(res)
    return calls["evalsha"] + calls["eval"]


async def _expire(shop: Shop, order_id: str) -> None:
    """The hold of `order_id` runs out, and `shop`'s process expires it."""
    async with shop.res.pool.acquire() as conn:
        await conn.execute(
            "UPDATE orders SET hold_expires_at = now() - interval '1 second' WHERE id = $1",
            int(order_id),
        )
    assert await expire_holds(shop) == 1


@pytest.fixture
def other_process(resources: Resources) -> Shop:
    """A shop of its own, hence its own gate and memory: what another API or worker process
    would have."""
    return Shop(resources)


async def test_losers_after_sell_out_are_refused_without_calling_redis(
    start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=2, per_buyer_limit=1)
    assert (await buy(drop["id"], "w1")).status_code == 201
    assert (await buy(drop["id"], "w2")).status_code == 201
    first = await buy(drop["id"], "loser-0")
    assert first.status_code == 409

    before = await _gate_calls(resources)
    started = time.monotonic()
    answers = [await buy(drop["id"], f"loser-{i}") for i in range(1, 31)]
    elapsed = time.monotonic() - started
    calls = await _gate_calls(resources) - before

    for answer in answers:
        assert answer.status_code == 409
        assert answer.json() == first.json()  # the very answer the gate gave
    # at most an attempt and a snapshot per memory period reach Redis, not one per attempt
    periods = int(elapsed / refusals.MEMORY_S) + 1
    assert calls <= 2 * periods < len(answers), (calls, elapsed)
    truth = await stock_truth(resources, drop["id"])
    assert truth["held"] == 2 and truth["ordered_units"] == 2


async def test_a_lasting_storm_stays_off_redis(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=1, per_buyer_limit=1)
    assert (await buy(drop["id"], "w1")).status_code == 201
    assert (await buy(drop["id"], "loser")).status_code == 409
    url = f"/api/drops/{drop['id']}/buy"
    tokens = [auth(f"storm-{i}", "viewer") for i in range(10)]

    async def attempt(headers: dict[str, str]) -> int:
        response = await client.post(
            url, json={"quantity": 1}, headers={**headers, "Idempotency-Key": new_key()}
        )
        return response.status_code

    before = await _gate_calls(resources)
    started = time.monotonic()
    statuses: list[int] = []
    while time.monotonic() - started < 6 * refusals.MEMORY_S:
        statuses += await asyncio.gather(*(attempt(headers) for headers in tokens))
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    calls = await _gate_calls(resources) - before
    assert set(statuses) == {409}
    # a snapshot refreshed in the background every half period, and no attempt sent on. On a
    # busy machine a refresh can land after its snapshot ended and let a wave through, so the
    # bound allows twice the refreshes plus a wave; any per-attempt Redis call would blow it
    # (and the 1-in-20 bound) by far.
    refreshes = int(elapsed / (refusals.MEMORY_S / 2)) + 2
    assert calls <= 2 * refreshes + len(tokens), (calls, refreshes, len(statuses))
    assert calls * 20 <= len(statuses), (calls, len(statuses))


async def test_replay_of_a_winning_key_after_sell_out_gets_the_stored_order(
    start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop(quantity=1, per_buyer_limit=1)
    won = await buy(drop["id"], "bob", key="checkout-7")
    assert won.status_code == 201
    assert (await buy(drop["id"], "carol")).status_code == 409  # sold out: now remembered
    replay = await buy(drop["id"], "bob", key="checkout-7")
    assert replay.status_code == 201 and replay.content == won.content
    assert replay.headers.get("idempotent-replayed") == "true"


async def test_over_limit_buyer_still_hears_limit_reached_after_sell_out(
    start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop(quantity=2, per_buyer_limit=2)
    assert (await buy(drop["id"], "bob", 2)).status_code == 201
    assert (await buy(drop["id"], "carol")).status_code == 409
    over = await buy(drop["id"], "bob")
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "limit_reached"
    assert over.json()["error"]["holding"] == 2
    assert (await buy(drop["id"], "carol")).json()["error"]["code"] == "sold_out"


async def test_stock_returned_in_this_process_is_buyable_at_once(
    start_drop: StartDrop, buy: Buy, shop: Shop
) -> None:
    drop = await start_drop(quantity=1, per_buyer_limit=1)
    held = await buy(drop["id"], "bob")
    assert (await buy(drop["id"], "carol")).status_code == 409
    await _expire(shop, held.json()["order_id"])
    assert (await buy(drop["id"], "carol")).status_code == 201


async def test_stock_returned_by_another_process_is_buyable_within_the_bound(
    start_drop: StartDrop, buy: Buy, other_process: Shop
) -> None:
    drop = await start_drop(quantity=1, per_buyer_limit=1)
    held = await buy(drop["id"], "bob")
    assert (await buy(drop["id"], "carol")).status_code == 409
    # the worker (another process) expires bob's hold: this process is not told
    await _expire(other_process, held.json()["order_id"])
    returned_at = time.monotonic()
    while True:
        sent_after = time.monotonic() - returned_at
        attempt = await buy(drop["id"], "carol")
        if attempt.status_code == 201:
            break
        assert attempt.json()["error"]["code"] == "sold_out"
        assert sent_after < refusals.MEMORY_S + 0.05, "the returned unit stayed unbuyable"
        await asyncio.sleep(0.01)
    truth = await stock_truth(other_process.res, drop["id"])
    assert truth["held"] == 1 and truth["max_per_buyer"] == 1


async def test_closing_a_remembered_drop_answers_closed_at_once(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop(quantity=1, per_buyer_limit=1)
    assert (await buy(drop["id"], "bob")).status_code == 201
    assert (await buy(drop["id"], "carol")).json()["error"]["code"] == "sold_out"
    closed = await client.post(f"/api/drops/{drop['id']}/close", headers=auth("hana", "host"))
    assert closed.status_code == 200
    after = await buy(drop["id"], "carol")
    assert after.status_code == 409 and after.json()["error"]["status"] == "closed"


async def test_a_scheduled_drop_opens_on_time_despite_remembered_refusals(
    start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=1, per_buyer_limit=1, starts_in_s=1)
    starts_at = datetime.fromisoformat(drop["starts_at"]).timestamp()
    early = await buy(drop["id"], "bob")
    assert early.json()["error"]["status"] == "scheduled"
    while True:
        sent_at = time.time()
        attempt = await buy(drop["id"], "bob")
        if attempt.status_code == 201:
            break
        assert attempt.json()["error"]["status"] == "scheduled"
        assert sent_at < starts_at + 0.05, "the drop opened late"
        await asyncio.sleep(0.005)


async def test_snapshots_are_not_trusted_past_their_moment(
    start_drop: StartDrop, buy: Buy, shop: Shop
) -> None:
    drop = await start_drop(quantity=1, per_buyer_limit=1)
    assert (await buy(drop["id"], "bob")).status_code == 201
    assert (await buy(drop["id"], "carol")).status_code == 409
    memory = shop.gate.recent
    digest = idempotency_digest("carol", "k")
    assert memory.refusal(int(drop["id"]), "carol", 1, digest) == SoldOut(0)
    await asyncio.sleep(refusals.MEMORY_S)
    assert memory.refusal(int(drop["id"]), "carol", 1, digest) is None


def _snapshot(trusted_until: float | None = None, **changes: object) -> Snapshot:
    now_ms = time.time() * 1000
    fields: dict[str, object] = {
        "closed": False,
        "starts_ms": int(now_ms - 60_000),
        "ends_ms": int(now_ms + 60_000),
        "limit": 2,
        "free": 0,
        "holdings": {"bob": 2, "carol": 1},
        "seen": {"d-bob": 1},
    }
    fields.update(changes)
    until = time.monotonic() + 1 if trusted_until is None else trusted_until
    return Snapshot(until, GateState(**fields))  # type: ignore[arg-type]


def test_snapshot_refuses_in_the_gate_scripts_order() -> None:
    now = time.time() * 1000
    sold_out = _snapshot()
    assert sold_out.refusal("bob", 1, "d-bob", now) is None  # a replay goes to the gate
    assert sold_out.refusal("bob", 1, "d-other", now) == LimitReached(2, 2)
    assert sold_out.refusal("carol", 1, "", now) == SoldOut(0)
    assert sold_out.refusal("carol", 2, "", now) == LimitReached(1, 2)
    assert _snapshot(closed=True).refusal("bob", 1, "", now) == NotActive("closed")
    assert _snapshot(starts_ms=int(now + 500)).refusal("dave", 1, "", now) == NotActive("scheduled")
    assert _snapshot(ends_ms=int(now)).refusal("dave", 1, "", now) == NotActive("ended")
    # free units left: the gate decides (it may grant); a snapshot never grants
    assert _snapshot(free=1).refusal("dave", 1, "", now) is None
    assert _snapshot(free=1).refusal("dave", 2, "", now) == SoldOut(1)


def test_memory_is_bounded() -> None:
    memory = refusals.RecentRefusals(aioredis.Redis(), gate_keys, max_drops=3)
    memory._remember(0, _snapshot(trusted_until=time.monotonic() - 1))  # expired: goes first
    for drop_id in range(1, 10):
        memory._remember(drop_id, _snapshot())
        assert len(memory._snapshots) <= 3
    assert sorted(memory._snapshots) == [7, 8, 9]


async def test_a_refresh_cancelled_before_it_ran_leaves_nothing_waiting() -> None:
    memory = refusals.RecentRefusals(aioredis.Redis(), gate_keys)
    memory._remember(5, _snapshot(trusted_until=time.monotonic() + refusals.MEMORY_S / 4))
    assert memory.refusal(5, "carol", 1, "") == SoldOut(0)  # starts a refresh
    (refresh,) = memory._refreshing
    refresh.cancel()  # as at shutdown, before it ever ran
    with contextlib.suppress(asyncio.CancelledError):
        await refresh
    await asyncio.sleep(0)  # its done callbacks
    assert not memory._refreshing
    async with asyncio.timeout(0.1):
        assert await memory.settled(5) is False  # nobody waits on a read that never happens


async def test_drops_too_big_to_snapshot_are_left_to_the_gate(
    start_drop: StartDrop, buy: Buy, resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refusals, "MAX_ENTRIES", 3)  # two winners: two buyers + two keys
    drop = await start_drop(quantity=2, per_buyer_limit=1)
    assert (await buy(drop["id"], "w1")).status_code == 201
    assert (await buy(drop["id"], "w2")).status_code == 201
    before = await _gate_calls(resources)
    local_before = _refused_locally()
    answers = [await buy(drop["id"], f"loser-{i}") for i in range(5)]
    assert [a.json()["error"]["code"] for a in answers] == ["sold_out"] * 5
    assert _refused_locally() == local_before
    assert await _gate_calls(resources) - before >= 5  # every attempt asked the gate


def _refused_locally() -> float:
    return sum(
        REGISTRY.get_sample_value("livesell_gate_refused_locally_total", {"reason": reason}) or 0
        for reason in ("sold_out", "limit_reached", "not_active")
    )
