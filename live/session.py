"""One viewer's connection: identity, subscriptions, and the only way bytes reach its socket.

Frames are built here, not by the `websockets` library: server→client frames are unmasked and
(with permessage-deflate off) identical for every viewer, so a room's tick is framed once and
the same bytes are written to every viewer's transport. The per-connection outbox is the
transport's write buffer: past `outbox_bytes` the viewer is too slow and is disconnected (3008)
instead of being buffered without limit.

Nothing is written once the connection is closing: after the peer's close frame websockets has
answered it and half-closed the TCP connection, and a later write would raise.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from core.auth import Principal
from live.errors import SLOW, Disconnect
from live.metrics import HUB_METRICS, SENT

if TYPE_CHECKING:
    from live.feed import Feed

_TEXT = 0x81  # FIN + text opcode


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked WebSocket text frame carrying `payload`."""
    size = len(payload)
    if size < 126:
        return bytes((_TEXT, size)) + payload
    if size < 65_536:
        return struct.pack("!BBH", _TEXT, 126, size) + payload
    return struct.pack("!BBQ", _TEXT, 127, size) + payload


PING_FRAME = text_frame(b"{}")

# A viewer cut off as slow still gets its close frame (3008) behind the data already queued, if
# it reads again within this many seconds; one that does not is dropped without it.
SLOW_CLOSE_PATIENCE_S = 10.0
_DRAIN_POLL_S = 0.05

# closing handshakes in flight (held so they are not garbage-collected mid-way)
_closing: set[asyncio.Task[None]] = set()


class Session:
    __slots__ = (
        "ws",
        "transport",
        "client_id",
        "principal",
        "name",
        "connected",
        "feeds",
        "closing",
        "awaiting_pong",
        "outbox_bytes",
        "expiry",
        "close_code",
        "_tokens",
        "_refilled_at",
        "__weakref__",
    )

    def __init__(self, ws: ServerConnection, outbox_bytes: int) -> None:
        self.ws = ws
        self.transport: asyncio.WriteTransport = ws.transport  # type: ignore[assignment]
        self.client_id = str(uuid.uuid4())
        self.principal: Principal | None = None
        self.name = ""  # the display name the token carries (`name` claim), if any
        self.connected = False
        self.feeds: dict[str, Feed] = {}
        self.closing = False
        self.awaiting_pong = False
        self.outbox_bytes = outbox_bytes
        self.expiry: object = None  # the token's deadline entry, kept by `live.tokens.Expiries`
        self.close_code: int | None = None  # the hub's, when the hub closed the connection
        self._tokens = 0.0
        self._refilled_at = 0.0

    @property
    def user_id(self) -> str:
        return self.principal.user_id if self.principal else ""

    def send(self, *messages: bytes) -> None:
        """Write replies or pushes as one frame (several JSON objects joined by newlines)."""
        self.write_frame(text_frame(b"\n".join(messages)))

    def write_frame(self, frame: bytes) -> None:
        if self.closing:
            return
        if self.ws.protocol.state is not State.OPEN:
            self.peer_closed()
            return
        if self.transport.get_write_buffer_size() > self.outbox_bytes:
            self.disconnect(SLOW)
            return
        self.transport.write(frame)
        SENT.add(1, len(frame))

    def take_token(self, rate: float, burst: float, now: float) -> float:
        """Token bucket for commands; returns the balance after taking one (negative = over)."""
        self._tokens = min(burst, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        self._tokens -= 1
        return self._tokens

    def fill_bucket(self, burst: float, now: float) -> None:
        self._tokens = burst
        self._refilled_at = now

    def peer_closed(self) -> None:
        """The client closed the connection: send nothing more; the connection handler sees the
        close and detaches the session."""
        if not self.closing:
            self._stop()

    def disconnect(self, reason: Disconnect) -> None:
        """Close with `reason`'s code; the connection handler then drops every subscription."""
        if self.closing:
            return
        self.close_code = reason.code
        HUB_METRICS.disconnected(reason.code)
        self._stop()
        if self.ws.protocol.state is State.OPEN:
            task = asyncio.get_running_loop().create_task(self._close(reason))
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        else:
            self.transport.abort()

    def _stop(self) -> None:
        self.closing = True
        for feed in list(self.feeds.values()):
            feed.remove(self)
        self.feeds.clear()

    async def _close(self, reason: Disconnect) -> None:
        if reason.code == SLOW.code:
            # The close frame can only follow the data already queued; written now, the closing
            # handshake's timeout would run out while the viewer drains that data and the frame
            # would be dropped with it. So wait, a bounded time, for the queue to drain first.
            loop = asyncio.get_running_loop()
            give_up_at = loop.time() + SLOW_CLOSE_PATIENCE_S
            while self.transport.get_write_buffer_size() and loop.time() < give_up_at:
                if self.ws.protocol.state is not State.OPEN:
                    return  # it closed meanwhile
                await asyncio.sleep(_DRAIN_POLL_S)
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # never read again: nothing more to wait for
                return
        await self.ws.close(reason.code, reason.reason)
