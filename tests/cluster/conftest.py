"""Cluster fixtures: the session's PostgreSQL with a real Valkey Cluster (3 primaries, 3
replicas, the session's `valkey_cluster`) in place of the single Valkey. `settings` and
`resources` are overridden here, so every shared fixture (`shop`, `client`, `clean_state`, the
storefront helpers) runs against the cluster in this folder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from core.db import migrate_url
from core.resources import Resources, open_resources
from core.settings import Settings
from tests.cluster.valkey_cluster import ValkeyCluster
from tests.conftest import Servers, make_settings

# the slot ranges `valkey-cli --cluster create` gives three primaries
SHARDS = ((0, 5460), (5461, 10922), (10923, 16383))


def shard_of(tag: str) -> int:
    """Which of the three primaries serves the keys with hash tag `tag` (e.g. "room:7")."""
    slot = key_slot(("{" + tag + "}").encode())
    return next(i for i, (start, end) in enumerate(SHARDS) if start <= slot <= end)


@pytest.fixture(scope="session")
def settings(servers: Servers, valkey_cluster: ValkeyCluster) -> Settings:
    return make_settings(servers, redis_url=valkey_cluster.url)


@pytest.fixture(scope="session")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    assert settings.database_url
    await migrate_url(settings.database_url)
    async with open_resources(settings) as res:
        yield res
