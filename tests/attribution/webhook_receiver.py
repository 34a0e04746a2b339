"""The integrating app's side of livesell's outbound webhooks, as a test sees it: a real local
HTTP endpoint that answers the statuses it is told to and records what it got, and the check of
the `Livesell-Signature` header an app would make."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import msgspec


class Receiver:
    """A real local HTTP endpoint of the integrating app: answers the statuses queued, records
    what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                     .encode())  # fmt: skip
        await writer.drain()
        writer.close()


def verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(parts["v1"], expected.hexdigest())


def signed_events(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every body the endpoint received, in order, each checked against its signature."""
    events = []
    for headers, body in receiver.received:
        assert verify(secret, headers["livesell-signature"], body), "a forged delivery"
        event = msgspec.json.decode(body)
        assert headers["livesell-event"] == event["type"]
        events.append(event)
    return events
