"""Scripts run many at a time in one round trip, and survive Redis losing its script cache;
calls made together share round trips."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from core.embedded import free_port
from core.ratelimit import Limit, RateLimiter
from core.resources import Resources
from core.scripts import Batched, run_many

COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_scripts_run_in_order_and_once_each_even_after_a_script_flush(
    resources: Resources,
) -> None:
    client = resources.redis
    script = client.register_script(COUNT)
    keys = ["{scripts-test}:a", "{scripts-test}:b"]
    await client.delete(*keys)

    assert await run_many(client, script, [([keys[0]], [2])]) == [2]
    assert await run_many(client, script, [([keys[0]], [1]), ([keys[1]], [5])]) == [3, 5]

    for calls, expected in (
        ([([keys[0]], [10])], [13]),
        ([([keys[0]], [1]), ([keys[1]], [1])], [14, 6]),
    ):
        await client.script_flush()  # as after a restart: every EVALSHA answers NOSCRIPT
        assert await run_many(client, script, calls) == expected
    # nothing ran twice across the reloads
    assert [int(v) for v in await client.mget(keys)] == [14, 6]


async def test_no_round_trip_is_spent_asking_whether_the_script_exists(
    resources: Resources,
) -> None:
    client = resources.redis
    script = client.register_script(COUNT)
    await run_many(client, script, [(["{scripts-test}:c"], [1])])  # loaded
    await client.config_resetstat()
    await run_many(client, script, [(["{scripts-test}:c"], [1]), (["{scripts-test}:d"], [1])])
    seen = {name for name in await client.info("commandstats") if name.startswith("cmdstat_")}
    assert "cmdstat_evalsha" in seen
    assert not any(name.startswith("cmdstat_script") for name in seen), seen


# --- Batched: calls made at the same moment share round trips ---

APPEND = """
if ARGV[1] == 'boom' then return redis.error_reply('boom refused') end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""
LOG = "{scripts-test}:log"


async def test_calls_made_together_share_one_round_trip_each_run_once_in_order(
    resources: Resources,
) -> None:
    client = resources.redis
    batched = Batched(client, client.register_script(APPEND))

    replies = await asyncio.gather(*(batched([LOG], [f"call-{i}"]) for i in range(50)))

    assert replies == list(range(1, 51))  # each call's own reply: the list's length after it
    assert batched.round_trips == 1
    assert await client.lrange(LOG, 0, -1) == [f"call-{i}".encode() for i in range(50)]


async def test_round_trips_carry_at_most_max_batch_calls_and_max_in_flight_at_once(
    resources: Resources,
) -> None:
    client = resources.redis
    batched = Batched(client, client.register_script(APPEND), max_batch=4, max_in_flight=1)

    replies = await asyncio.gather(*(batched([LOG], [f"call-{i}"]) for i in range(10)))

    assert replies == list(range(1, 11))
    assert batched.round_trips == 3  # 4 + 4 + 2, one after another
    assert await client.lrange(LOG, 0, -1) == [f"call-{i}".encode() for i in range(10)]


async def test_a_calls_own_error_is_its_callers_alone(resources: Resources) -> None:
    client = resources.redis
    batched = Batched(client, client.register_script(APPEND))

    replies = await asyncio.gather(
        batched([LOG], ["a"]),
        batched([LOG], ["boom"]),
        batched([LOG], ["b"]),
        return_exceptions=True,
    )

    assert replies[0] == 1 and replies[2] == 2
    assert isinstance(replies[1], redis.exceptions.ResponseError)
    assert "boom refused" in str(replies[1])
    # alone in its round trip, too
    with pytest.raises(redis.exceptions.ResponseError, match="boom refused"):
        await batched([LOG], ["boom"])
    assert await client.lrange(LOG, 0, -1) == [b"a", b"b"]


async def test_batched_calls_survive_a_script_flush_and_run_once(resources: Resources) -> None:
    client = resources.redis
    batched = Batched(client, client.register_script(APPEND))
    assert await batched([LOG], ["first"]) == 1  # loaded

    await client.script_flush()  # as after a restart: every EVALSHA answers NOSCRIPT
    assert await batched([LOG], ["alone"]) == 2
    await client.script_flush()
    assert await asyncio.gather(*(batched([LOG], [f"many-{i}"]) for i in range(3))) == [3, 4, 5]

    assert await client.lrange(LOG, 0, -1) == [b"first", b"alone", b"many-0", b"many-1", b"many-2"]


async def test_a_call_cancelled_before_its_round_trip_is_never_sent(
    resources: Resources,
) -> None:
    client = resources.redis
    batched = Batched(client, client.register_script(APPEND))

    kept = batched.submit([LOG], ["kept"])
    taken_back = batched.submit([LOG], ["taken back"])
    taken_back.cancel()

    assert await kept == 1
    assert batched.round_trips == 1
    assert await client.lrange(LOG, 0, -1) == [b"kept"]


async def test_an_unreachable_redis_fails_every_caller_of_the_round_trip() -> None:
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
    try:
        batched = Batched(client, client.register_script(APPEND))
        replies = await asyncio.gather(
            *(batched([LOG], [str(i)]) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, redis.exceptions.ConnectionError) for r in replies), replies
        assert batched.round_trips == 1
        # and the next calls try again
        with pytest.raises(redis.exceptions.ConnectionError):
            await batched([LOG], ["again"])
        assert batched.round_trips == 2
    finally:
        await client.aclose()


async def test_rate_limits_allow_hits_while_redis_is_unreachable() -> None:
    client = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
    try:
        limiter = RateLimiter(client)
        strict = Limit("scripts-test", hits=1)
        assert await limiter.hit((strict, "alice")) is None
        assert await limiter.hit((strict, "alice"), (strict, "10.0.0.1")) is None
    finally:
        await client.aclose()


async def test_rate_limit_hits_made_together_are_each_counted(resources: Resources) -> None:
    limiter = RateLimiter(resources.redis)
    limit = Limit("scripts-test", hits=3)

    verdicts = await asyncio.gather(
        *(limiter.hit((limit, "alice"), (limit, f"10.0.0.{i}")) for i in range(5))
    )

    assert verdicts[:3] == [None, None, None]
    assert all(v is not None and v.limit == limit for v in verdicts[3:])
