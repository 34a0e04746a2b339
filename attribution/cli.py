"""`livesell payouts`: settle due commissions, create a payout batch, print it as CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attribution.commissions import settle
from attribution.errors import PayoutNotFound
from attribution.payouts import batch_csv, batch_view, run_payout
from core.db import migrate_url
from core.resources import open_resources
from core.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    payouts = sub.add_parser(
        "payouts",
        help="pay confirmed commission as a payout batch and print its CSV",
        description="Confirm commissions whose return window has passed, then pay every positive "
        "payable balance in one batch (negative balances from clawbacks are netted, not paid) "
        "and print the batch as CSV. Running it again pays nothing twice.",
    )
    payouts.add_argument("--csv", metavar="BATCH_ID", type=int, help="export an existing batch")
    payouts.add_argument("--out", metavar="FILE", type=Path, help="write the CSV to FILE")
    payouts.add_argument(
        "--no-settle", action="store_true", help="do not confirm due commissions first"
    )
    payouts.add_argument("--by", default="cli", help="recorded as the batch's creator")


async def payouts_command(settings: Settings, args: argparse.Namespace) -> int:
    assert settings.database_url
    await migrate_url(settings.database_url)
    async with open_resources(settings, pool_max=4) as res:
        if args.csv is not None:
            async with res.pool.acquire() as conn:
                try:
                    batch = await batch_view(conn, args.csv)
                except PayoutNotFound as exc:
                    print(f"livesell payouts: {exc.message}", file=sys.stderr)
                    return 1
        else:
            if not args.no_settle:
                confirmed = await settle(res)
                print(f"confirmed {confirmed} commissions", file=sys.stderr)
            batch = await run_payout(res, created_by=args.by)
            if batch.id is None:
                print("nothing payable: no batch created", file=sys.stderr)
                return 0
            print(
                f"payout batch {batch.id}: {len(batch.items)} distributors, "
                f"{batch.total_cents} cents",
                file=sys.stderr,
            )
    text = batch_csv(batch)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
