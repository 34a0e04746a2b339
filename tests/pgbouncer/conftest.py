"""PgBouncer fixtures: a database of its own on the session's PostgreSQL, reached only through
a real PgBouncer in transaction pool mode. `settings` and `resources` are overridden here, so the
shared fixtures (`shop`, `client`, `clean_state`) and the storefront's helpers run through the
pooler in this folder, with asyncpg's statement cache off (LIVESELL_PG_STATEMENT_CACHE=0).

The database's own time zone is not UTC, so a session-level `SET TIME ZONE` that the pooler
hands to another client, or loses, shows."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.db import migrate_url
from core.resources import Resources, open_resources
from core.settings import Settings, load_settings
from tests.conftest import Servers, base_environ
from tests.pgbouncer.pgbouncer import PgBouncer, binary
from tests.storefront.conftest import buy, product_id, room_id, start_drop  # noqa: F401

DATABASE = "livesell_pgbouncer"
# an empty database for migrating from many clients at once
EMPTY_DATABASE = "livesell_pgbouncer_empty"
# a time zone the database falls back to when a client's own setting is lost
DATABASE_TIME_ZONE = "Asia/Shanghai"


@pytest.fixture(scope="session")
def pgbouncer_binary() -> str:
    program = binary()
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pgbouncer is not installed; CI installs it (.ci/run)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    return program


@pytest.fixture(scope="session")
async def pgbouncer(servers: Servers, pgbouncer_binary: str) -> AsyncIterator[PgBouncer]:
    admin = await asyncpg.connect(servers.pg.url)
    try:
        for name in (DATABASE, EMPTY_DATABASE):
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {name}")
            await admin.execute(f"ALTER DATABASE {name} SET timezone = '{DATABASE_TIME_ZONE}'")
    finally:
        await admin.close()
    assert servers.pg.port is not None
    bouncer = PgBouncer(servers.pg.port, (DATABASE, EMPTY_DATABASE)).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def settings(servers: Servers, pgbouncer: PgBouncer) -> Settings:
    settings = load_settings(
        environ={
            **base_environ(servers),
            "DATABASE_URL": pgbouncer.url(DATABASE),
            "LIVESELL_PG_STATEMENT_CACHE": "0",
        },
        dotenv=None,
    )
    assert settings.pg_statement_cache == 0
    return settings


@pytest.fixture(scope="session")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    assert settings.database_url
    await migrate_url(settings.database_url)
    async with open_resources(settings) as res:
        yield res


def direct_url(servers: Servers, database: str) -> str:
    """`database` without the pooler (to check what the pooler's clients did)."""
    return servers.pg.url.rsplit("/", 1)[0] + "/" + database
