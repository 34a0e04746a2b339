"""Commission rules an admin sets: a product's rate or fixed amount per unit, a distributor's
overrides (for one product or for all), and tiers by a distributor's own confirmed sales.

Rules are read once, when an order is credited (migration 0021's attribution_credit_order),
and the terms found are kept with the order (order_commission_terms): changing a rule changes
later orders only. Single level always: a tier raises only the promoted distributor's rate on
their own sales.
"""

from __future__ import annotations

from attribution.errors import DistributorNotFound, RuleInvalid
from attribution.views_admin import RateBody, RateList, RateView, Tier, TierList
from core.db import Conn
from core.errors import ProductNotFound


def _one_of(bps: int | None, cents: int | None) -> None:
    if (bps is None) == (cents is None):
        raise RuleInvalid("give exactly one of commission_bps and commission_cents")


async def set_product_commission(
    conn: Conn, product_id: int, bps: int | None, cents: int | None
) -> RateView:
    """A product pays a rate, or (its rate then 0) a fixed amount per unit."""
    _one_of(bps, cents)
    row = await conn.fetchrow(
        """UPDATE products SET commission_bps = $2, commission_cents = $3 WHERE id = $1
           RETURNING commission_bps, commission_cents""",
        product_id,
        0 if bps is None else bps,
        cents,
    )
    if row is None:
        raise ProductNotFound(product_id)
    return RateView(
        distributor_id=None,
        product_id=str(product_id),
        commission_bps=None if cents is not None else row["commission_bps"],
        commission_cents=row["commission_cents"],
    )


async def set_distributor_rate(
    conn: Conn, distributor_id: int, body: RateBody, admin: str
) -> RateList:
    _one_of(body.commission_bps, body.commission_cents)
    product_id = None if body.product_id is None else int(body.product_id)
    async with conn.transaction():
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM distributors WHERE id = $1)", distributor_id
        ):
            raise DistributorNotFound(distributor_id)
        if product_id is not None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)", product_id
        ):
            raise ProductNotFound(product_id)
        await conn.execute(
            """INSERT INTO distributor_rates
                   (distributor_id, product_id, commission_bps, commission_cents, updated_by)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (distributor_id, product_id) DO UPDATE
               SET commission_bps = EXCLUDED.commission_bps,
                   commission_cents = EXCLUDED.commission_cents,
                   updated_by = EXCLUDED.updated_by, updated_at = now()""",
            distributor_id,
            product_id,
            body.commission_bps,
            body.commission_cents,
            admin,
        )
    return await distributor_rates(conn, distributor_id)


async def distributor_rates(conn: Conn, distributor_id: int) -> RateList:
    rows = await conn.fetch(
        """SELECT product_id, commission_bps, commission_cents, updated_at
           FROM distributor_rates WHERE distributor_id = $1
           ORDER BY product_id NULLS FIRST""",
        distributor_id,
    )
    return RateList(
        distributor_id=str(distributor_id),
        rates=[
            RateView(
                distributor_id=str(distributor_id),
                product_id=None if r["product_id"] is None else str(r["product_id"]),
                commission_bps=r["commission_bps"],
                commission_cents=r["commission_cents"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ],
    )


async def set_tiers(conn: Conn, tiers: TierList) -> TierList:
    """Replace the tiers as a whole."""
    names = [t.name for t in tiers.tiers]
    floors = [t.min_confirmed_gmv_cents for t in tiers.tiers]
    if len(set(names)) != len(names) or len(set(floors)) != len(floors):
        raise RuleInvalid("tier names and min_confirmed_gmv_cents must each be unique")
    async with conn.transaction():
        await conn.execute("DELETE FROM commission_tiers")
        await conn.executemany(
            "INSERT INTO commission_tiers (name, min_confirmed_gmv_cents, bonus_bps) "
            "VALUES ($1, $2, $3)",
            [(t.name, t.min_confirmed_gmv_cents, t.bonus_bps) for t in tiers.tiers],
        )
    return await list_tiers(conn)


async def list_tiers(conn: Conn) -> TierList:
    rows = await conn.fetch(
        "SELECT name, min_confirmed_gmv_cents, bonus_bps FROM commission_tiers "
        "ORDER BY min_confirmed_gmv_cents"
    )
    return TierList(
        tiers=[
            Tier(
                name=r["name"],
                min_confirmed_gmv_cents=int(r["min_confirmed_gmv_cents"]),
                bonus_bps=r["bonus_bps"],
            )
            for r in rows
        ]
    )
