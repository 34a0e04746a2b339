"""The node's one Redis pub/sub connection, shared by every room this hub node serves.

A small RESP client of its own (hiredis parses) rather than redis-py's PubSub, because the hub must
*know* when the link dropped: redis-py silently reconnects and resubscribes, hiding the window in
which publications were missed. Here a lost link is reported (`on_lost`), the link reconnects with
backoff, resubscribes every channel, and reports `on_restored` so the hub can check each channel's
stream for a gap and let its viewers recover from history.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import hiredis
from redis.asyncio.connection import SSLConnection
from redis.connection import parse_url

log = logging.getLogger("livesell.hub.pubsub")

PING_EVERY_S = 5.0
DEAD_AFTER_S = 15.0
SUBSCRIBE_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 5.0


def _command(*parts: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class PubSubLink:
    """Subscribe/unsubscribe channels; messages go to `on_message(channel, data)` in order."""

    def __init__(
        self,
        url: str,
        on_message: Callable[[bytes, bytes], None],
        *,
        on_lost: Callable[[], None],
        on_restored: Callable[[], None],
    ) -> None:
        self._options = parse_url(url)
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._channels: set[bytes] = set()
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait until Redis confirms: from then on nothing published is missed."""
        name = channel.encode()
        self._channels.add(name)
        writer = self._writer
        if writer is None or not self.connected.is_set():
            raise ConnectionError("redis pub/sub link is down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(future)
        writer.write(_command(b"SUBSCRIBE", name))
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
            await future

    def unsubscribe(self, channel: str) -> None:
        name = channel.encode()
        self._channels.discard(name)
        if self._writer is not None and self.connected.is_set():
            self._writer.write(_command(b"UNSUBSCRIBE", name))

    async def run(self) -> None:
        """Keep the link up until cancelled: reconnect with backoff, log once per outage."""
        backoff = 0.1
        failing = False
        while True:
            try:
                reader, writer = await self._open()
            except (OSError, ConnectionError, TimeoutError) as exc:
                if not failing:
                    log.warning("redis pub/sub unreachable, retrying with backoff: %r", exc)
                    failing = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if failing:
                log.info("redis pub/sub link restored")
                failing = False
            backoff = 0.1
            try:
                await self._serve(reader, writer)
            except (OSError, ConnectionError, TimeoutError, hiredis.ProtocolError) as exc:
                log.warning("redis pub/sub link lost, reconnecting: %r", exc)
                failing = True
            finally:
                self._drop(writer)
            await asyncio.sleep(backoff)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        opts = self._options
        context = (
            ssl.create_default_context() if opts.get("connection_class") is SSLConnection else None
        )
        async with asyncio.timeout(3):
            reader, writer = await asyncio.open_connection(
                opts.get("host", "localhost"), opts.get("port", 6379), ssl=context
            )
            if opts.get("password"):
                auth = [b"AUTH"]
                if opts.get("username"):
                    auth.append(str(opts["username"]).encode())
                auth.append(str(opts["password"]).encode())
                writer.write(_command(*auth))
                parser = hiredis.Reader()
                while (reply := parser.gets()) is False:
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise ConnectionError("redis closed the connection during AUTH")
                    parser.feed(chunk)
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"redis AUTH refused: {reply}")
        return reader, writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        self._writer = writer
        pending = set(self._channels)
        # the node's own channel keeps the connection in subscribed mode even with no rooms
        writer.write(_command(b"SUBSCRIBE", b"livesell:hub", *pending))
        pending.add(b"livesell:hub")
        restored = False
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        while True:
            try:
                async with asyncio.timeout(PING_EVERY_S):
                    chunk = await reader.read(65536)
            except TimeoutError:
                if loop.time() - last_ping > DEAD_AFTER_S:
                    raise TimeoutError("redis pub/sub link silent") from None
                writer.write(_command(b"PING"))
                continue
            if not chunk:
                raise ConnectionError("redis closed the pub/sub connection")
            last_ping = loop.time()
            parser.feed(chunk)
            while (reply := parser.gets()) is not False:
                if not isinstance(reply, list) or len(reply) < 2:
                    continue
                kind = reply[0]
                if kind == b"message":
                    self._on_message(reply[1], reply[2])
                elif kind == b"subscribe":
                    name = reply[1]
                    pending.discard(name)
                    for future in self._waiting.pop(name, ()):
                        if not future.done():
                            future.set_result(None)
                    if not pending and not restored:
                        restored = True
                        self.connected.set()
                        self._on_restored()

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        was_up = self.connected.is_set()
        self.connected.clear()
        self._writer = None
        writer.close()
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ConnectionError("redis pub/sub link lost"))
        self._waiting.clear()
        if was_up:
            self._on_lost()
