"""Small helpers of storefront's SQL."""

from __future__ import annotations

import asyncpg


def must(row: asyncpg.Record | None) -> asyncpg.Record:
    """A row the statement always returns (RETURNING of a write, a row locked just before)."""
    if row is None:
        raise RuntimeError("expected a row")
    return row
