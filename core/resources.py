"""The long-lived resources of a process, created once and handed down explicitly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from core.db import create_pool
from core.events import Publisher
from core.settings import Settings


@dataclass(eq=False)
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    publisher: Publisher


@asynccontextmanager
async def open_resources(settings: Settings, *, pool_max: int = 20) -> AsyncIterator[Resources]:
    """Connect to PostgreSQL and Redis (URLs must be resolved) and close both on exit."""
    assert settings.database_url and settings.redis_url, "resolve embedded servers first"
    async with AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url, max_size=pool_max)
        stack.push_async_callback(pool.close)
        client = redis_client(settings.redis_url)
        stack.push_async_callback(client.aclose)
        publisher = Publisher(client, settings.hub_history_size, settings.hub_history_ttl_s)
        yield Resources(settings=settings, pool=pool, redis=client, publisher=publisher)


def redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=10,
        max_connections=200,
    )
