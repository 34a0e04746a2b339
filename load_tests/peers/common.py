"""What the peers share: the command line, the join replies and the push they relay.

The join replies are livesell's own wire types (`live.protocol`), and the subscribe reply carries
a room snapshot of livesell's own type (`live.RoomSnapshot`), so every peer sends what livesell
sends. The Node peer gets the same snapshot bytes on its command line (`--snapshot`).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import msgspec

from core.events import channel_keys
from live import RoomSnapshot, RoomView
from live.protocol import ConnectResult, ErrorBody, Reply, SubscribeResult
from storefront import ProductView


def room_snapshot(room_id: str = "1") -> RoomSnapshot:
    """A live room with a pinned card and no drop, as livesell's subscribe reply carries it."""
    at = datetime(2030, 1, 1, 12, tzinfo=UTC)
    room = RoomView(
        id=room_id, host_id="bench-host", title="Benchmark room", status="live",
        pinned_product_id="1", created_at=at, live_at=at, ended_at=None,
    )  # fmt: skip
    product = ProductView(
        id="1", sku="BENCH-1", title="Tea set", price_cents=12_900, commission_bps=800
    )
    return RoomSnapshot(room=room, pinned=product, drop=None, server_time=at, viewers=0)


SNAPSHOT = msgspec.json.encode(room_snapshot())
_encode = msgspec.json.Encoder().encode


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="redis://… of the bench's Valkey")
    parser.add_argument("--channel", default="room:1")
    return parser.parse_args()


def pubsub_name(channel: str) -> str:
    """The pub/sub channel livesell's publisher writes a room's events to."""
    return channel_keys(channel)[2]


def replies(payload: bytes, channel: str) -> tuple[list[bytes], bool]:
    """Answer each command of a Centrifugo frame; also say whether it subscribed."""
    out: list[bytes] = []
    subscribed = False
    for line in payload.split(b"\n"):
        if not line.strip():
            continue
        command = msgspec.json.decode(line)
        if not isinstance(command, dict) or "id" not in command:
            continue  # a pong
        ident = command["id"]
        if "connect" in command:
            connected = ConnectResult(client="peer", version="", ping=25, pong=False)
            out.append(_encode(Reply(id=ident, connect=connected)))
        elif "subscribe" in command:
            result = SubscribeResult(data=msgspec.Raw(SNAPSHOT))
            out.append(_encode(Reply(id=ident, subscribe=result)))
            subscribed = True
        else:
            error = ErrorBody(code=104, message="not found")
            out.append(_encode(Reply(id=ident, error=error)))
    return out, subscribed


def push(message: bytes, channel: str) -> bytes:
    """Turn livesell's pub/sub message `<offset>\\n<epoch>\\n<key>\\n<data>` into a push."""
    offset, _epoch, _key, data = message.split(b"\n", 3)
    return (
        b'{"push":{"channel":"'
        + channel.encode()
        + b'","pub":{"data":'
        + data
        + b',"offset":'
        + offset
        + b"}}}"
    )
