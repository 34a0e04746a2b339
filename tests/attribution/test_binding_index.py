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
        # the function's own query, its arguments as parameters (a SQL function with OUT
        # arguments is not inlined, so EXPLAIN of a call shows only "Function Scan")
        body = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE proname = 'attribution_binding'"
        )
        for n, name in enumerate(("p_buyer", "p_room", "p_since", "p_at", "p_rule"), start=1):
            body = body.replace(name, f"${n}")
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetchval(
            f"EXPLAIN (FORMAT JSON) {body}", "buyer-1", 1, now - timedelta(days=7), now, "last"
        )
    text = json.dumps(json.loads(plan))
    assert "room_entries_binding_any_idx" in text, text
