"""Test fixtures: real embedded PostgreSQL and Valkey, started once per session.

Each test starts from empty tables and an empty Redis (truncate + FLUSHALL), so tests are
isolated without paying for a server per test.

`LIVESELL_TEST_REDIS=cluster` runs the tests against a real Valkey Cluster (3 primaries, 3
replicas, tests/cluster/valkey_cluster.py) instead of the single Valkey: `make test` runs the
storefront, hub and attribution suites again so.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.auth import mint_token
from core.db import migrate_url
from core.embedded import EmbeddedPostgres, EmbeddedValkey
from core.ratelimit import Limit
from core.resources import Resources, open_resources
from core.settings import Settings, load_settings
from livesell.app import create_app
from storefront import Shop
from tests.cluster.valkey_cluster import ValkeyCluster

TEST_SECRET = "test-secret-not-for-production-0123456789"
# the `redis` the shared fixtures use: "single" (one Valkey) or "cluster"
TEST_REDIS = os.environ.get("LIVESELL_TEST_REDIS") or "single"


@dataclass
class Servers:
    root: Path
    pg: EmbeddedPostgres
    valkey: EmbeddedValkey


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    root = Path(tempfile.mkdtemp(prefix="livesell-test-"))
    pg = EmbeddedPostgres(root / "pg", durable=False)
    valkey = EmbeddedValkey(root / "valkey", durable=False)
    pg.start()
    valkey.start()
    try:
        yield Servers(root, pg, valkey)
    finally:
        valkey.stop()
        pg.stop(mode="immediate")


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A fresh directory for an embedded server's data, directly in the system temp dir.

    Not pytest's tmp_path: run as root, PostgreSQL runs as a system user, who cannot pass
    through tmp_path's private (0700) parents, and livesell changes no directory above a data
    dir."""
    path = Path(tempfile.mkdtemp(prefix="livesell-data-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def base_environ(servers: Servers) -> dict[str, str]:
    """The environment the test settings are read from."""
    return {
        "DATABASE_URL": servers.pg.url,
        "REDIS_URL": servers.valkey.url,
        "LIVESELL_DATA_DIR": str(servers.root / "data"),
        "LIVESELL_SECRET": TEST_SECRET,
        "LIVESELL_DEV": "1",
    }


def make_settings(servers: Servers, **overrides: object) -> Settings:
    return load_settings(environ=base_environ(servers), dotenv=None, **overrides)


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster(Path(tempfile.mkdtemp(prefix="livesell-cluster-")))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def settings(servers: Servers, request: pytest.FixtureRequest) -> Settings:
    if TEST_REDIS == "cluster":
        cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
        return make_settings(servers, redis_url=cluster.url)
    return make_settings(servers)


@pytest.fixture(scope="session")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    assert settings.database_url
    await migrate_url(settings.database_url)
    async with open_resources(settings) as res:
        yield res


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> None:
    """Empty every table and Redis before each test that touches them."""
    if "resources" not in request.fixturenames:
        return
    res: Resources = request.getfixturevalue("resources")
    async with res.pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'schema_migrations'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    await res.redis.flushall()


@pytest.fixture
async def shop(resources: Resources) -> AsyncIterator[Shop]:
    """The storefront's parts for one test (a fresh memory of refusals: ids restart)."""
    shop = Shop(resources)
    yield shop
    await shop.settled()


@pytest.fixture
async def client(
    settings: Settings, resources: Resources, shop: Shop
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, resources, shop)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://livesell.test") as http:
        yield http


@pytest.fixture
def auth(settings: Settings) -> Callable[..., dict[str, str]]:
    """`auth("alice", "host")` → headers carrying a token for alice with the host role."""

    def headers(sub: str, *roles: str) -> dict[str, str]:
        token = mint_token(settings.secret, sub, roles or ("viewer",))
        return {"Authorization": f"Bearer {token}"}

    return headers


async def within_one_window(need_s: float) -> None:
    """Wait for the next fixed rate-limit window (`core.ratelimit`: windows start at multiples
    of their length on the Unix clock) when the current one has less than `need_s` left: the
    hits a test counts must all land in one window, or the count starts over halfway."""
    window_s = Limit("any", 0).window_s
    left = window_s - time.time() % window_s
    if left < need_s:
        await asyncio.sleep(left + 0.05)
