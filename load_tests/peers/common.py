"""What the Python peers share: the command line, the join replies and the push they relay."""

from __future__ import annotations

import argparse

import msgspec

from core.events import channel_keys

# the same size and shape as livesell's room snapshot in a subscribe reply
SNAPSHOT = {
    "room": {"id": "1", "title": "Benchmark room", "status": "live", "host": "bench"},
    "pinned": {"product_id": "1", "title": "Tea set", "price_cents": 12_900},
    "drop": None,
    "viewers": 0,
    "server_time": "2030-01-01T12:00:00Z",
}
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
            out.append(_encode({"id": ident, "connect": {"client": "peer", "ping": 25}}))
        elif "subscribe" in command:
            result = {"recoverable": False, "data": SNAPSHOT}
            out.append(_encode({"id": ident, "subscribe": result}))
            subscribed = True
        else:
            out.append(_encode({"id": ident, "error": {"code": 104, "message": "not found"}}))
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
