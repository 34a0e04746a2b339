"""One room of a million viewers on many hub nodes: a model built from figures measured here.

    python -m load_tests.scale_model      # measure, then model 1,000,000 viewers on 50 hubs
    python -m load_tests.scale_model --viewers 200000 --hubs 10 --orders-per-s 100

What is measured, on this machine, each run (an embedded Valkey started for the purpose; Redis
CPU is read from the server's own `INFO commandstats`, usec_per_call, so the client's speed does
not count):

- the room's publish script (core/lua/publish.lua) with `--hubs` SSUBSCRIBEd connections on its
  channel, and with none (the difference is the fan-out to the hub nodes),
- one hub node's viewer report (live/lua/viewers_report.lua) in a room reported by `--hubs` nodes,
- a recovering viewer's read (live.history's stream-state script) of 100 missed events,
- the size of each event on the wire (msgspec JSON, as published).

What is not measured here but taken from docs/hub.md (measured on this machine with
`python -m load_tests.fanout --no-node`, 5,000 viewers): the hub's CPU per delivered event,
`--hub-us-per-delivery` (default 6.5 µs). The event rates of the room are inputs (flags).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from core.embedded import EmbeddedValkey
from core.events import Publisher, channel_keys, room_channel
from live.chat import LikesChanged
from live.events import ViewersChanged
from live.history import StreamReader
from live.viewers import ViewerCounts
from storefront.events import OrderPlaced, StockChanged

ROOM = 1
HUB_US_PER_DELIVERY = 6.5  # docs/hub.md, load_tests.fanout --no-node, 5,000 viewers
# a push frame's bytes around the event's data
FRAME_OVERHEAD = len(b'{"push":{"channel":"room:1","pub":{"data":,"offset":1234567}}}\n')
HISTORY_SIZE = 1000  # LIVESELL_HUB_HISTORY_SIZE default
VIEWER_REPORTS_PER_S = 1.0  # each hub node reports each room once a second (live/viewers.py)


@dataclass
class Measured:
    publish_us: float  # Redis CPU per publish with `hubs` subscribers
    publish_alone_us: float  # ... with none
    report_us: float  # Redis CPU per viewer report, `hubs` nodes reporting
    recover_us: float  # Redis CPU per recovery read of 100 missed events
    sizes: dict[str, int]  # bytes of each event's data


def _usec_per_call(info: dict[str, dict[str, float]], command: str) -> tuple[float, float]:
    stats = info.get(f"cmdstat_{command}", {})
    return float(stats.get("calls", 0)), float(stats.get("usec", 0))


async def _server_us(client: aioredis.Redis, command: str, run: object) -> float:
    """Server CPU µs per call of `command` while awaiting `run` (a coroutine)."""
    await client.config_resetstat()
    await run  # type: ignore[misc]
    calls, usec = _usec_per_call(await client.info("commandstats"), command)
    return usec / calls if calls else 0.0


def _events() -> dict[str, msgspec.Struct]:
    return {
        "order.placed": OrderPlaced(
            drop_id="123",
            product_id="45",
            buyer="a***e",
            quantity=1,
            placed_at=datetime.now(UTC),
        ),
        "stock.changed": StockChanged(drop_id="123", quantity=500, remaining=321, sold=170, held=9),
        "viewers.changed": ViewersChanged(room_id=str(ROOM), viewers=1_000_000),
        "likes.changed": LikesChanged(room_id=str(ROOM), total=12_345_678),
    }


async def measure(hubs: int, calls: int) -> Measured:
    root = Path(tempfile.mkdtemp(prefix="livesell-scale-"))
    valkey = EmbeddedValkey(root / "valkey", durable=False)
    url = valkey.start()
    client = aioredis.Redis.from_url(url)
    listeners: list[aioredis.Redis] = []
    try:
        publisher = Publisher(client, HISTORY_SIZE)
        order = _events()["order.placed"]
        channel = room_channel(ROOM)
        await publisher.publish(channel, order)  # loads the script

        async def publish_many() -> None:
            for _ in range(calls // 100):
                await publisher.publish_many([(channel, order)] * 100)

        alone = await _server_us(client, "evalsha", publish_many())
        events_key = channel_keys(channel)[2]
        for _ in range(hubs):
            listener = aioredis.Redis.from_url(url)
            pubsub = listener.pubsub()
            await pubsub.execute_command("SSUBSCRIBE", events_key)
            listeners.append(listener)
        with_hubs = await _server_us(client, "evalsha", publish_many())

        nodes = [ViewerCounts(client, f"hub-{i}") for i in range(hubs)]

        async def reports() -> None:
            for n in range(max(1, calls // hubs)):
                await asyncio.gather(*(node.report({str(ROOM): 20_000 + n}) for node in nodes))

        await nodes[0].report({str(ROOM): 1})
        report = await _server_us(client, "evalsha", reports())

        reader = StreamReader(client, HISTORY_SIZE, 86_400)
        top = (await reader.state(channel)).top
        epoch = (await reader.state(channel)).epoch

        async def recoveries() -> None:
            for _ in range(max(1, calls // 10)):
                state = await reader.state(channel, recover_from=(top - 100, epoch))
                assert state.missed is not None and len(state.missed) == 100

        recover = await _server_us(client, "evalsha", recoveries())
        sizes = {name: len(msgspec.json.encode(e)) for name, e in _events().items()}
        return Measured(with_hubs, alone, report, recover, sizes)
    finally:
        for listener in listeners:
            await listener.aclose()
        await client.aclose()
        valkey.stop()
        shutil.rmtree(root, ignore_errors=True)


def model(args: argparse.Namespace, m: Measured) -> list[tuple[str, str]]:
    per_hub = args.viewers / args.hubs
    rates = {
        "order.placed": args.orders_per_s,
        "stock.changed": args.stock_per_s,
        "likes.changed": args.likes_per_s,
        # one announcement a room a second (live/viewers.py); before: one per reporting node
        "viewers.changed": 1.0,
    }
    events_s = sum(rates.values())
    latest_s = events_s - rates["order.placed"]
    room_shard_us = events_s * m.publish_us + args.hubs * VIEWER_REPORTS_PER_S * m.report_us
    old_viewers_s = args.hubs * VIEWER_REPORTS_PER_S  # every changed report announced
    bytes_in = sum(rates[k] * (m.sizes[k] + 40) for k in rates)  # + the "<offset>\n<epoch>\n…" head
    frame_bytes = sum(rates[k] * (m.sizes[k] + FRAME_OVERHEAD) for k in rates)
    deliveries = events_s * per_hub
    # latest-value events take no history entry (core/lua/publish.lua): only orders fill it
    history_now = HISTORY_SIZE / max(rates["order.placed"], 1e-9)
    history_before = HISTORY_SIZE / events_s
    reconnecting = per_hub
    recover_s = reconnecting * m.recover_us / 1e6
    rows = [
        ("room", f"{args.viewers:,} viewers on {args.hubs} hub nodes ({per_hub:,.0f} a node)"),
        (
            "room events/s",
            f"{events_s:g} ({', '.join(f'{k} {v:g}' for k, v in rates.items())})",
        ),
        (
            "measured: publish (Redis CPU)",
            f"{m.publish_us:.1f} µs with {args.hubs} hub "
            f"subscribers, {m.publish_alone_us:.1f} µs with none",
        ),
        ("measured: viewer report (Redis CPU)", f"{m.report_us:.1f} µs ({args.hubs} nodes)"),
        ("measured: recovery read, 100 events", f"{m.recover_us:.1f} µs"),
        ("measured: event sizes (bytes)", ", ".join(f"{k} {v}" for k, v in m.sizes.items())),
        ("assumed: hub CPU per delivery", f"{args.hub_us_per_delivery:g} µs (docs/hub.md)"),
        (
            "Redis shard of {room:ID}",
            f"{events_s + args.hubs * VIEWER_REPORTS_PER_S:g} script calls/s "
            f"({events_s:g} publishes, {args.hubs * VIEWER_REPORTS_PER_S:g} viewer reports), "
            f"{events_s * args.hubs:,.0f} pub/sub messages/s out, "
            f"{room_shard_us / 1e4:.2f}% of one core",
        ),
        (
            "viewers.changed, announced by every node",
            f"up to {old_viewers_s:g}/s a room -> {old_viewers_s * args.hubs:,.0f} messages/s "
            f"from the shard (now 1/s -> {args.hubs}/s)",
        ),
        (
            "other shards",
            "drop gates ({drop:ID}), chat ({chat:ID}), visitors ({entry:…}): "
            "spread by hash tag, not loaded by viewers",
        ),
        ("per hub: from Redis", f"{bytes_in:,.0f} B/s"),
        (
            "per hub: to viewers",
            f"{deliveries:,.0f} deliveries/s, {frame_bytes * per_hub / 1e6:,.1f} MB/s "
            f"({frame_bytes * per_hub * 8 / 1e9:,.2f} Gbit/s) before coalescing",
        ),
        (
            "per hub: CPU",
            f"{deliveries * args.hub_us_per_delivery / 1e6:,.2f} cores at "
            f"{args.hub_us_per_delivery:g} µs a delivery",
        ),
        (
            f"recovery coverage (history of {HISTORY_SIZE} entries)",
            f"{history_now:,.1f} s: only ordinary events ({rates['order.placed']:g}/s) take "
            f"entries; {history_before:,.1f} s when latest-value events ({latest_s:g}/s) "
            "took entries too (before)",
        ),
        (
            "a hub node dies",
            f"{reconnecting:,.0f} viewers reconnect to the other {args.hubs - 1} and recover: "
            f"{recover_s:,.2f} s of the room shard's CPU for their reads "
            f"({'within' if recover_s < history_now else 'BEYOND'} the coverage)",
        ),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.scale_model",
        description=(
            "Model one big room on many hub nodes from per-node figures measured on this "
            "machine (an embedded Valkey, Redis CPU from INFO commandstats): Redis work per "
            "shard, bytes per hub, recovery coverage after a hub node dies."
        ),
    )
    parser.add_argument("--viewers", type=int, default=1_000_000)
    parser.add_argument("--hubs", type=int, default=50)
    parser.add_argument(
        "--orders-per-s",
        type=float,
        default=50.0,
        help="order.placed (the ticker; ordinary events kept in history)",
    )
    parser.add_argument(
        "--stock-per-s",
        type=float,
        default=10.0,
        help="stock.changed (latest-value, coalesced per API process)",
    )
    parser.add_argument("--likes-per-s", type=float, default=5.0, help="likes.changed")
    parser.add_argument("--hub-us-per-delivery", type=float, default=HUB_US_PER_DELIVERY)
    parser.add_argument("--calls", type=int, default=5000, help="calls per measurement")
    args = parser.parse_args(argv)
    measured = asyncio.run(measure(args.hubs, args.calls))
    width = max(len(k) for k, _ in model(args, measured))
    for key, value in model(args, measured):
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
