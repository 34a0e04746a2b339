"""Scripts run many at a time in one round trip, and survive Redis losing its script cache."""

from __future__ import annotations

from core.resources import Resources
from core.scripts import run_many

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
