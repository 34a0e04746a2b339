"""One viewer's connection: the WebSocket protocol on its transport, identity, subscriptions, and
the only way bytes reach its socket.

`Session` is the connection's `asyncio.Protocol`. It reads and answers the opening handshake
(`live.handshake`); from then on the WebSocket protocol is the `websockets` library's sans-I/O
`ServerProtocol`, created open: it parses every client frame (over `max_size` it closes with
1009), answers pings and runs the closing handshake; `Session` only moves bytes between it and
the transport. Nothing runs per connection while it idles: no task, no timer. A frame is handled
at once when it needs no I/O (connect, a pong); a subscribe runs in a task that lives until the
frames queued behind it are handled.

Frames are built here: server→client frames are unmasked and (with permessage-deflate off)
identical for every viewer, so a room's tick is framed once and the same bytes are written to
every viewer's transport. The per-connection outbox is the transport's write buffer: past
`outbox_bytes` the viewer is too slow and is disconnected (3008) instead of being buffered
without limit.

Nothing is written once the connection is closing: after the peer's close frame the protocol
has answered it and half-closed the TCP connection, and a later write would raise.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Awaitable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from core.auth import Principal
from live.errors import SLOW, Disconnect
from live.handshake import HandshakeError, Request, accept, response
from live.metrics import HUB_METRICS, SENT

if TYPE_CHECKING:
    from websockets.server import ServerProtocol

    from live.feed import Feed
    from live.hub import Waiting
    from live.server import Listener

log = logging.getLogger("livesell.hub")

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

# enum members read once: on Python 3.11 every `_OPEN` goes through enum's descriptor
_OPEN = State.OPEN
_TEXT_FRAME, _BINARY_FRAME, _CONTINUATION, _CLOSE = (
    Opcode.TEXT,
    Opcode.BINARY,
    Opcode.CONT,
    Opcode.CLOSE,
)

# A viewer cut off as slow still gets its close frame (3008) behind the data already queued, if
# it reads again within this many seconds; one that does not is dropped without it.
SLOW_CLOSE_PATIENCE_S = 10.0
_DRAIN_POLL_S = 0.05
# frames read but not yet handled, while a command waits on Redis or PostgreSQL; past this the
# transport stops reading (TCP pushes back on the client) until the queue drains
MAX_QUEUED_FRAMES = 4

# closing handshakes of slow viewers in flight (held so they are not garbage-collected mid-way)
_closing: set[asyncio.Task[None]] = set()


class Session(asyncio.Protocol):
    __slots__ = (
        "listener",
        "transport",
        "protocol",
        "_request",
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
        "_busy",
        "_queued",
        "_fragments",
        "_close_timer",
        "__weakref__",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.WriteTransport = None  # type: ignore[assignment]
        # the WebSocket protocol, once the opening handshake (read into `_request`) succeeded
        self.protocol: ServerProtocol | None = None
        self._request: Request | None = Request()
        self.principal: Principal | None = None
        self.name = ""  # the display name the token carries (`name` claim), if any
        self.connected = False
        self.feeds: dict[str, Feed] = {}
        self.closing = False
        self.awaiting_pong = False
        self.outbox_bytes = listener.outbox_bytes
        self.expiry: object = None  # the token's deadline entry, kept by `live.tokens.Expiries`
        self.close_code: int | None = None  # the hub's, when the hub closed the connection
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._busy: asyncio.Task[None] | None = None  # the command waiting on I/O, if any
        self._queued: deque[bytes] | None = None  # frames read meanwhile
        self._fragments: list[bytes] | None = None  # a fragmented message being reassembled
        self._close_timer: asyncio.TimerHandle | None = None

    @property
    def client_id(self) -> str:
        return str(self.protocol.id) if self.protocol is not None else ""

    @property
    def user_id(self) -> str:
        return self.principal.user_id if self.principal else ""

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)
        self.listener.hub.opened(self)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol is None:
            self._read_request(data)
            return
        protocol.receive_data(data)
        events = protocol.events_received()
        self._write_pending()
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)

    def eof_received(self) -> bool | None:
        if self.protocol is not None:
            self.protocol.receive_eof()
            self._write_pending()
        return None  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.protocol is not None:
            self.protocol.receive_eof()  # idempotent: the protocol's state is CLOSED now
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        hub = self.listener.hub
        accepted = self in hub.sessions
        if not self.closing:
            self._stop()
        hub.detach(self)
        if accepted:
            HUB_METRICS.connection_closed(self)

    # --- the opening handshake ---

    def _read_request(self, data: bytes) -> None:
        request = self._request
        if request is None:
            return  # answered (and closing), or waiting for its check with reading paused
        try:
            if not request.feed(data):
                return
        except HandshakeError as refused:
            self._request = None
            self._refuse(refused.response)
            return
        self._request = None
        check = self.listener.check(self, request)
        if check is None or isinstance(check, bytes):
            self._respond(request, check)
            return
        # the check waits on Redis (a per-address limit): read nothing more meanwhile
        self.transport.pause_reading()  # type: ignore[attr-defined]
        self._busy = self.listener.hub.loop.create_task(self._respond_after(request, check))

    async def _respond_after(self, request: Request, check: Awaitable[bytes | None]) -> None:
        try:
            answer = await check
        except Exception:  # noqa: BLE001 - the client gets a 500, the log the details
            log.exception("hub handshake check failed")
            answer = response(
                HTTPStatus.INTERNAL_SERVER_ERROR, "Failed to open a WebSocket connection."
            )
        self._busy = None
        if self.transport.is_closing():
            return  # dropped meanwhile (the hub stopped, or the handshake took too long)
        self._respond(request, answer)
        if self.protocol is not None:
            self.transport.resume_reading()  # type: ignore[attr-defined]

    def _respond(self, request: Request, answer: bytes | None) -> None:
        """Open the WebSocket, or answer `answer` (an HTTP response) and close."""
        if answer is None:
            try:
                opening = accept(request, self.listener.origins)
            except HandshakeError as refused:
                answer = refused.response
            else:
                if self.listener.serving:
                    self._open(opening, request.rest)
                    return
                answer = response(HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.")
        self._refuse(answer)

    def _refuse(self, answer: bytes) -> None:
        self.transport.write(answer)
        self.transport.close()  # once written

    def _open(self, opening: bytes, rest: bytes) -> None:
        self.transport.write(opening)
        self.protocol = self.listener.new_protocol()
        self.listener.hub.attach(self)
        HUB_METRICS.connection_opened()
        if rest:
            self.data_received(rest)  # frames the client sent right behind its request

    # --- inbound frames ---

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        data = cast(bytes, frame.data)  # the parser makes bytes
        if opcode is _TEXT_FRAME or opcode is _BINARY_FRAME:
            if frame.fin:
                self._message(data)
            else:
                self._fragments = [data]
        elif opcode is _CONTINUATION:
            fragments = self._fragments
            if fragments is not None:
                fragments.append(data)
                if frame.fin:
                    self._fragments = None
                    self._message(b"".join(fragments))
        elif opcode is _CLOSE:
            self.peer_closed()  # the protocol answered it; the TCP close follows
        # pings are answered by the protocol itself; pongs need nothing

    def _message(self, message: bytes) -> None:
        if self.closing:
            return
        if self._busy is not None:
            queued = self._queued
            if queued is None:
                queued = self._queued = deque()
            queued.append(message)
            if len(queued) == MAX_QUEUED_FRAMES:
                self.transport.pause_reading()  # type: ignore[attr-defined]
            return
        waiting = self.listener.hub.receive(self, message)
        if waiting is not None:
            self._busy = self.listener.hub.loop.create_task(self._handle_queue(waiting))

    async def _handle_queue(self, waiting: Waiting) -> None:
        """Finish the frame whose command waits on I/O, then the frames queued behind it."""
        hub = self.listener.hub
        try:
            await hub.finish(self, waiting)
            queued = self._queued
            while queued and not self.closing:
                if len(queued) == MAX_QUEUED_FRAMES and not self.transport.is_closing():
                    self.transport.resume_reading()  # type: ignore[attr-defined]
                more = hub.receive(self, queued.popleft())
                if more is not None:
                    await hub.finish(self, more)
        finally:
            self._busy = None
            self._queued = None

    # --- outbound ---

    def send(self, *messages: bytes) -> None:
        """Write replies or pushes as one frame (several JSON objects joined by newlines)."""
        self.write_frame(text_frame(b"\n".join(messages)))

    def write_frame(self, frame: bytes) -> None:
        if self.closing:
            return
        if self.protocol is None or self.protocol.state is not _OPEN:
            self.peer_closed()
            return
        if self.transport.get_write_buffer_size() > self.outbox_bytes:
            self.disconnect(SLOW)
            return
        self.transport.write(frame)
        SENT.add(1, len(frame))

    def _write_pending(self) -> None:
        """Write what the protocol has to send (pongs, close frames); arm the close timeout
        when it expects the TCP connection to end."""
        protocol = self.protocol
        assert protocol is not None
        transport = self.transport
        for data in protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):
                    pass  # already closed
            else:
                transport.close()
        if protocol.close_expected() and self._close_timer is None:
            self._close_timer = self.listener.hub.loop.call_later(
                self.listener.close_timeout_s, transport.abort
            )

    # --- the token bucket for commands ---

    def take_token(self, rate: float, burst: float, now: float) -> float:
        """Token bucket for commands; returns the balance after taking one (negative = over)."""
        self._tokens = min(burst, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        self._tokens -= 1
        return self._tokens

    def fill_bucket(self, burst: float, now: float) -> None:
        self._tokens = burst
        self._refilled_at = now

    # --- closing ---

    def peer_closed(self) -> None:
        """The client closed the connection: send nothing more; the hub forgets the session
        when the TCP connection ends."""
        if not self.closing:
            self._stop()

    def disconnect(self, reason: Disconnect) -> None:
        """Close with `reason`'s code, dropping every subscription at once."""
        if self.closing:
            return
        self.close_code = reason.code
        HUB_METRICS.disconnected(reason.code)
        self._stop()
        if self.protocol is None or self.protocol.state is not _OPEN:
            self.transport.abort()
        elif reason.code == SLOW.code and self.transport.get_write_buffer_size():
            task = asyncio.get_running_loop().create_task(self._close_when_drained(reason))
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        else:
            self._send_close(reason)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        self._stop()
        self.transport.abort()

    def _stop(self) -> None:
        self.closing = True
        for feed in list(self.feeds.values()):
            feed.remove(self)
        self.feeds.clear()

    def _send_close(self, reason: Disconnect) -> None:
        if self.protocol is not None and self.protocol.state is _OPEN:
            self.protocol.send_close(reason.code, reason.reason)
            self._write_pending()

    async def _close_when_drained(self, reason: Disconnect) -> None:
        # The close frame can only follow the data already queued; written now, the closing
        # handshake's timeout would run out while the viewer drains that data and the frame
        # would be dropped with it. So wait, a bounded time, for the queue to drain first.
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + SLOW_CLOSE_PATIENCE_S
        while self.transport.get_write_buffer_size() and loop.time() < give_up_at:
            if self.protocol is None or self.protocol.state is not _OPEN:
                return  # it closed meanwhile
            await asyncio.sleep(_DRAIN_POLL_S)
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # never read again: nothing more to wait for
            return
        self._send_close(reason)
