"""The connection type storefront's SQL helpers accept: a plain one or one from the pool."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def must(row: asyncpg.Record | None) -> asyncpg.Record:
    """A row the statement always returns (RETURNING of a write, a row locked just before)."""
    if row is None:
        raise RuntimeError("expected a row")
    return row
