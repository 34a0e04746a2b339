"""A claim storm: 3,000 attempts by 1,000 viewers on a release of 100 coupons, one per viewer.
Exactly 100 are claimed, nobody holds two, nobody gets a 5xx; and with Redis flushed in the
middle of the storm (the gate rebuilt from PostgreSQL while claims are in flight) still none
over-issued."""

from __future__ import annotations

import asyncio
import random

import httpx

from core.redis_client import RedisClient as Redis
from core.resources import Resources
from storefront import Shop
from tests.storefront.conftest import Auth
from tests.storefront.test_coupons import release

USERS = 1_000
ATTEMPTS = 3_000
COUPONS = 100
AT_ONCE = 200


async def _storm(
    client: httpx.AsyncClient, auth: Auth, coupon_id: str, redis_lost: Redis | None = None
) -> list[int]:
    """The attempts, AT_ONCE at a time; with `redis_lost`, Redis is flushed while the first
    wave is in flight (claims popped from the old gate, not yet written)."""
    attempts = [f"viewer-{n % USERS}" for n in range(ATTEMPTS)]
    random.Random(7).shuffle(attempts)
    headers = {user: auth(user, "viewer") for user in set(attempts)}
    statuses: list[int] = []
    for start in range(0, ATTEMPTS, AT_ONCE):
        batch = attempts[start : start + AT_ONCE]
        lose = [_flush_soon(redis_lost)] if start == 0 and redis_lost is not None else []
        answers = await asyncio.gather(
            *lose,
            *(
                client.post(
                    f"/api/coupons/{coupon_id}/claim",
                    headers={**headers[user], "Idempotency-Key": f"storm-{start + i}"},
                )
                for i, user in enumerate(batch)
            ),
        )
        statuses += [a.status_code for a in answers if isinstance(a, httpx.Response)]
    return statuses


async def _flush_soon(redis: Redis) -> None:
    await asyncio.sleep(0.01)
    await redis.flushall()


async def _claimed(res: Resources, coupon_id: str) -> tuple[int, int]:
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS claims, count(DISTINCT user_id) AS users "
            "FROM coupon_claims WHERE coupon_id = $1",
            int(coupon_id),
        )
    return int(row["claims"]), int(row["users"])


async def test_claim_storm_issues_exactly_the_quantity(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, resources: Resources
) -> None:
    coupon = await release(client, auth, room_id, quantity=COUPONS)
    statuses = await _storm(client, auth, coupon["id"])
    await shop.settled()
    assert not [s for s in statuses if s >= 500]
    assert statuses.count(201) == COUPONS
    assert set(statuses) <= {201, 409, 429}
    assert await _claimed(resources, coupon["id"]) == (COUPONS, COUPONS)
    view = (await client.get(f"/api/coupons/{coupon['id']}")).json()
    assert (view["remaining"], view["status"]) == (0, "gone")


async def test_claim_storm_with_redis_flushed_midway_never_over_issues(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, resources: Resources
) -> None:
    coupon = await release(client, auth, room_id, quantity=COUPONS)
    statuses = await _storm(client, auth, coupon["id"], redis_lost=resources.redis)
    await shop.settled()
    assert len(statuses) == ATTEMPTS and not [s for s in statuses if s >= 500]
    claims, users = await _claimed(resources, coupon["id"])
    assert claims == users == COUPONS, "rebuilt from PostgreSQL: none twice, none over"
    assert statuses.count(201) == COUPONS
