"""PostgreSQL access: the pool and the numbered-migration runner."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection SQL helpers accept: a plain one, or one borrowed from the pool (the one type all
# packages use)
Conn = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger("livesell.db")

# Any fixed 64-bit number; every livesell process migrating the same database takes this lock.
MIGRATION_LOCK_ID = 7_411_502_906_001

Pool = asyncpg.Pool


async def create_pool(
    url: str, *, min_size: int = 2, max_size: int = 20, statement_cache_size: int = 100
) -> asyncpg.Pool:
    """`statement_cache_size=0` behind PgBouncer in transaction mode: a prepared statement lives
    in one server session, and the pooler hands each transaction any session."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        statement_cache_size=statement_cache_size,
        command_timeout=30,
        # a startup parameter, not a `SET`: a pooler applies it to whichever server session
        # serves the connection
        server_settings={"TimeZone": "UTC"},
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (a round trip on every release): livesell
    leaves no session state behind (only transaction-scoped advisory locks and settings, no
    LISTEN, no SET). asyncpg still rolls back a transaction left open."""


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every `NNNN_name.sql` in core/migrations, in order."""
    found = []
    for entry in resources.files("core.migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        prefix = name.split("_", 1)[0]
        if not prefix.isdigit():
            raise RuntimeError(f"migration file {name!r} must start with a number")
        found.append((int(prefix), name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two migration files share a number: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations, each in a transaction of its own; safe to run from many
    processes at once, and through a transaction-mode pooler (PgBouncer): the migration lock is
    transaction-scoped (`pg_advisory_xact_lock`), taken again by each migration's transaction,
    which checks under it whether another process applied that migration meanwhile. A
    session-level lock would be taken in one pooled server session and released in another."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    for version, name, sql in migration_files():
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
            if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)", version
            ):
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


async def migrate_url(url: str) -> list[str]:
    """Migrate the database at `url` (PostgreSQL itself, or a pooler in front of it: the
    connection keeps no prepared statements, which a transaction-mode pooler would lose)."""
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
