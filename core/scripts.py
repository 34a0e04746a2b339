"""Lua scripts run many at a time, in one round trip.

redis-py's pipeline of `Script` calls asks Redis `SCRIPT EXISTS` before every execution, an
extra round trip each time. `run_many` sends only the EVALSHAs (one command, or a
non-transactional pipeline of them); when Redis has lost the script (a restart, a failover, a
SCRIPT FLUSH), every call fails with NOSCRIPT and none ran, so it loads the script and sends
them again, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

# one call: the keys, then the arguments
Call = tuple[Sequence[str], Sequence[Any]]


async def run_many(client: aioredis.Redis, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
    """The replies of `script` run once per call, in order."""
    for attempt in (1, 2):
        try:
            return await _send(client, script.sha, calls)
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            script.sha = await client.script_load(script.script)
    raise AssertionError("unreachable")


async def _send(client: aioredis.Redis, sha: str, calls: Sequence[Call]) -> list[Any]:
    if len(calls) == 1:
        keys, args = calls[0]
        return [await client.evalsha(sha, len(keys), *keys, *args)]  # type: ignore[misc]
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return await pipe.execute()  # type: ignore[no-any-return]
