"""The demo `make serve` seeds: a host with a live room and products, a distributor with a link."""

from __future__ import annotations

from core.auth import mint_token
from core.resources import Resources

DEMO_HOST = "demo-host"
DEMO_VIEWER = "demo-viewer"
DEMO_DISTRIBUTOR = "demo-distributor"

DEMO_PRODUCTS = [
    ("DEMO-TEA-001", "Longjing green tea 250g / 龙井绿茶", 12_800, 1_500),
    ("DEMO-SILK-002", "Silk scarf / 真丝围巾", 29_900, 2_000),
    ("DEMO-HONEY-003", "Wildflower honey 500g / 百花蜂蜜", 6_800, 1_000),
]


async def seed(res: Resources) -> int:
    """Create the demo room once (idempotent by SKU and host); return its id."""
    async with res.pool.acquire() as conn, conn.transaction():
        product_ids = []
        for sku, title, price, bps in DEMO_PRODUCTS:
            product_ids.append(
                await conn.fetchval(
                    """INSERT INTO products (sku, title, price_cents, commission_bps, created_by)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (sku) DO UPDATE SET title = EXCLUDED.title RETURNING id""",
                    sku,
                    title,
                    price,
                    bps,
                    DEMO_HOST,
                )
            )
        room_id = await conn.fetchval(
            "SELECT id FROM rooms WHERE host_id = $1 AND status <> 'ended' ORDER BY id LIMIT 1",
            DEMO_HOST,
        )
        if room_id is None:
            room_id = await conn.fetchval(
                """INSERT INTO rooms (host_id, title, status, live_at, pinned_product_id)
                   VALUES ($1, $2, 'live', now(), $3) RETURNING id""",
                DEMO_HOST,
                "Demo live room / 演示直播间",
                product_ids[0],
            )
    return int(room_id)


async def seed_and_print(res: Resources) -> None:
    room_id = await seed(res)
    product_ids = await res.pool.fetch(
        "SELECT id FROM products WHERE sku = ANY($1::text[]) ORDER BY id",
        [sku for sku, *_ in DEMO_PRODUCTS],
    )
    products = ",".join(str(row["id"]) for row in product_ids)
    settings = res.settings
    api = settings.api_base_url
    tokens = {
        who: mint_token(settings.secret, who, roles)
        for who, roles in (
            (DEMO_HOST, ["host"]),
            (DEMO_VIEWER, ["viewer"]),
            (DEMO_DISTRIBUTOR, ["viewer", "distributor"]),
        )
    }
    print(
        f"""
livesell is up.
  API          {api}   (health: {api}/healthz, OpenAPI: {api}/api/openapi.json)
  hub          {settings.hub_url}
  demo room    {api}/api/rooms/{room_id}
  pages (open logged in; the page keeps the token and removes it from the address bar):
    host console     {api}/host/{room_id}?products={products}#token={tokens[DEMO_HOST]}
    viewer room      {api}/r/{room_id}#token={tokens[DEMO_VIEWER]}
    distributor      {api}/d?room={room_id}#token={tokens[DEMO_DISTRIBUTOR]}
  tokens (Authorization: Bearer ...):
    host         {tokens[DEMO_HOST]}
    viewer       {tokens[DEMO_VIEWER]}
    distributor  {tokens[DEMO_DISTRIBUTOR]}
  Ctrl-C stops livesell and its embedded servers.
""",
        flush=True,
    )
