"""The floor: a bare uvloop server that frames each push once and writes the same bytes to every
transport. No real server is cheaper; livesell's fan-out is judged against it.

    python -m load_tests.peers.uvloop_floor --port 9000 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import cast

import redis.asyncio as aioredis
import uvloop

from load_tests.peers.common import arguments, pubsub_name, push, replies

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 65_536:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big") + payload


def unmask(mask: bytes, data: bytes) -> bytes:
    key = int.from_bytes((mask * (len(data) // 4 + 1))[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


class Room:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.transports: set[asyncio.Transport] = set()

    def broadcast(self, message: bytes) -> None:
        frame = server_frame(push(message, self.channel))
        for transport in self.transports:
            transport.write(frame)


class Connection(asyncio.Protocol):
    def __init__(self, room: Room) -> None:
        self.room = room
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.room.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buffer + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            key = b""
            for line in buf[:end].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.upgraded = True
            buf = buf[end + 4 :]
        while len(buf) >= 6:
            length, head = buf[1] & 0x7F, 2
            if length == 126:
                length, head = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < head + 4 + length:
                break
            opcode = buf[0] & 0x0F
            payload = unmask(buf[head : head + 4], buf[head + 4 : head + 4 + length])
            buf = buf[head + 4 + length :]
            if opcode == 0x8:
                self.transport.close()
                return
            if opcode == 0x9:
                self.transport.write(server_frame(payload, 0xA))
            elif opcode == 0x1:
                answers, subscribed = replies(payload, self.room.channel)
                if answers:
                    self.transport.write(server_frame(b"\n".join(answers)))
                if subscribed:
                    self.room.transports.add(self.transport)
        self.buffer = buf


async def relay(redis_url: str, room: Room) -> None:
    client = aioredis.Redis.from_url(redis_url)
    async with client.pubsub() as pubsub:
        await pubsub.ssubscribe(pubsub_name(room.channel))
        async for message in pubsub.listen():
            if message["type"] == "smessage":
                room.broadcast(message["data"])


async def main() -> None:
    args = arguments(__doc__ or "")
    room = Room(args.channel)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(room), args.host, args.port, backlog=4096)
    async with server:
        await relay(args.redis, room)


if __name__ == "__main__":
    uvloop.run(main())
