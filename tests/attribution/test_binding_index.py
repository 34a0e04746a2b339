"""The binding lookup each order makes is an index range, never a scan of the room's entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from core.resources import Resources


async def test_the_binding_lookup_reads_the_buyers_entries_through_an_index(
    resources: Resources,
) -> None:
    now = datetime.now(UTC)
    async with resources.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT * FROM attribution_binding($1, $2, $3, $4, 'last')",
            "buyer-1",
            1,
            now - timedelta(days=7),
            now,
        )
    text = json.dumps(json.loads(plan))
    assert "room_entries_binding_any_idx" in text, text
