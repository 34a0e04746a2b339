"""The long-lived resources of a process, created once and handed down explicitly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
from redis.asyncio.cluster import RedisCluster

from core.aftercommit import AfterCommit
from core.auth import TokenVerifier
from core.db import create_pool
from core.events import Publisher
from core.ratelimit import RateLimiter
from core.redis_client import RedisClient, redis_client
from core.settings import Settings

# Redis connections a server opens at start-up: a drop going live has its buy attempts (the
# rate limiter, the gate) and its winners' after-commit calls in flight at once, each on its own
# pooled connection, and a connection opened mid-storm costs a handshake (connect, CLIENT
# SETINFO) on the event loop at the worst moment
WARM_REDIS_CONNECTIONS = 64


@dataclass(eq=False)
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    # one server, or a redis.asyncio.cluster.RedisCluster (core.redis_client)
    redis: RedisClient
    publisher: Publisher
    limiter: RateLimiter
    # bearer tokens, verified once and remembered while valid
    tokens: TokenVerifier
    # follow-up work of committed commands, run until the resources close
    after_commit: AfterCommit


@asynccontextmanager
async def open_resources(
    settings: Settings, *, pool_max: int = 20, warm: bool = False
) -> AsyncIterator[Resources]:
    """Connect to PostgreSQL and Redis (URLs must be resolved) and close both on exit.

    `warm` (servers): keep `settings.db_pool` PostgreSQL connections, all opened now, and open
    WARM_REDIS_CONNECTIONS Redis connections now, so that the first burst of traffic (a drop
    going live) does not pay for connecting, which is when it can least afford to."""
    assert settings.database_url and settings.redis_url, "resolve embedded servers first"
    async with AsyncExitStack() as stack:
        size = settings.db_pool if warm else None
        pool = await create_pool(
            settings.database_url,
            min_size=size or 2,
            max_size=size or pool_max,
            statement_cache_size=settings.pg_statement_cache,
        )
        stack.push_async_callback(pool.close)
        client = redis_client(settings.redis_url, cluster=settings.redis_cluster)
        stack.push_async_callback(client.aclose)
        if warm:
            await _open_redis_connections(client, WARM_REDIS_CONNECTIONS)
        publisher = Publisher(client, settings.hub_history_size, settings.hub_history_ttl_s)
        # entered last, left first: pending follow-up work still has PostgreSQL and Redis
        after_commit = await stack.enter_async_context(AfterCommit())
        yield Resources(
            settings=settings,
            pool=pool,
            redis=client,
            publisher=publisher,
            limiter=RateLimiter(client),
            tokens=TokenVerifier(settings.secret),
            after_commit=after_commit,
        )


async def _open_redis_connections(client: RedisClient, count: int) -> None:
    """Connect `count` of the client's pooled connections now (they stay in the pool). A
    cluster client learns the cluster's slots and nodes now instead; its per-node pools fill
    on use."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        return
    pool = client.connection_pool
    taken = []
    try:
        for _ in range(count):
            connection = await pool.get_connection()
            taken.append(connection)
    finally:
        for connection in taken:
            await pool.release(connection)
