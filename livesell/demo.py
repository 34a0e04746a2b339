"""The demo `make serve` seeds: a host with a live room and products, a distributor with a link."""

from __future__ import annotations

import msgspec

import attribution
import storefront
from core import rooms
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


class Demo(msgspec.Struct):
    room_id: int
    product_ids: list[int]
    link_url: str


async def seed(res: Resources) -> Demo:
    """Seed the demo through the packages' public functions; running it again reuses it all."""
    async with res.pool.acquire() as conn, conn.transaction():
        product_ids = []
        for sku, title, price, bps in DEMO_PRODUCTS:
            existing = await conn.fetchval("SELECT id FROM products WHERE sku = $1", sku)
            if existing is None:
                product = await storefront.create_product(
                    conn, sku=sku, title=title, price_cents=price, commission_bps=bps,
                    created_by=DEMO_HOST,
                )  # fmt: skip
                existing = int(product.id)
            product_ids.append(int(existing))
        room_id = await conn.fetchval(
            "SELECT id FROM rooms WHERE host_id = $1 AND status <> 'ended' ORDER BY id LIMIT 1",
            DEMO_HOST,
        )
        if room_id is None:
            room = await rooms.create_room(conn, DEMO_HOST, "Demo live room / 演示直播间")
            await rooms.set_live(conn, room.id)
            await rooms.set_pinned(conn, room.id, product_ids[0])
            room_id = room.id
        distributor = await attribution.become_distributor(conn, DEMO_DISTRIBUTOR, team="demo")
        link = await attribution.create_link(conn, res.settings, int(distributor.id), room_id)
    return Demo(room_id=int(room_id), product_ids=product_ids, link_url=link.url)


async def seed_and_print(res: Resources) -> None:
    demo = await seed(res)
    room_id = demo.room_id
    products = ",".join(str(product_id) for product_id in demo.product_ids)
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
  share link   {demo.link_url}   (the demo distributor's; opening it credits them)
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
