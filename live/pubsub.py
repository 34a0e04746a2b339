"""The node's Redis pub/sub links: one connection per Redis shard, shared by every room this hub
node serves there.

Rooms publish with sharded pub/sub (`SPUBLISH` in core/lua/publish.lua): a message goes to the
shard that owns the channel's slot, not over the whole cluster bus, so a hub listens to a room on
the node serving that slot (`SSUBSCRIBE`). With one Redis server every slot is that server's.

A small RESP client of its own (hiredis parses) rather than redis-py's PubSub, because the hub must
*know* when a link dropped: redis-py silently reconnects and resubscribes, hiding the window in
which publications were missed. Here a lost link is reported (`on_lost(channels)`), the link
reconnects with backoff (logged once per outage), asks the cluster again which node serves each
channel (a failover promotes a replica; a slot migration moves channels, which Redis announces
with an `sunsubscribe` we did not ask for), resubscribes, and reports `on_restored(channels)` so
the hub can check each channel's stream for a gap and let its viewers recover from history.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Collection

import hiredis
from redis.asyncio.connection import SSLConnection
from redis.connection import parse_url
from redis.crc import key_slot

from core.redis_client import cluster_target

log = logging.getLogger("livesell.hub.pubsub")

PING_EVERY_S = 5.0
DEAD_AFTER_S = 15.0
SUBSCRIBE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3.0
MAX_BACKOFF_S = 5.0
# the node's own channel keeps a connection in subscribed mode even with no rooms on it
KEEPER = b"livesell:hub"

Address = tuple[str, int]
Channels = Collection[bytes]


class SlotMoved(ConnectionError):
    """The node no longer serves a channel (it answered MOVED, or unsubscribed us itself)."""


def _command(*parts: bytes | str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Login:
    """How to open a connection to any node of the deployment."""

    def __init__(self, username: str | None, password: str | None, tls: bool) -> None:
        self.username, self.password, self.tls = username, password, tls

    async def open(self, address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = ssl.create_default_context() if self.tls else None
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(*address, ssl=context)
            if self.password:
                auth = [b"AUTH", *([self.username.encode()] if self.username else [])]
                writer.write(_command(*auth, self.password.encode()))
                reply = await _read_reply(reader)
                if isinstance(reply, hiredis.ReplyError):
                    writer.close()
                    raise ConnectionError(f"redis AUTH refused: {reply}")
        return reader, writer


async def _read_reply(reader: asyncio.StreamReader) -> object:
    parser = hiredis.Reader()
    while (reply := parser.gets()) is False:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        parser.feed(chunk)
    return reply


class _NodeLink:
    """One subscribed connection to one Redis node and the channels it serves us."""

    def __init__(self, address: Address, owner: PubSubLink) -> None:
        self.address = address
        self.owner = owner
        self.channels: set[bytes] = set()
        self.up = False
        # an outage is logged when it starts and when it ends, not at every retry
        self.failing = False
        self.backoff = 0.1
        self.task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}
        # SUNSUBSCRIBEs sent on this connection and not yet answered, by channel: their answers
        # are ours, not the cluster moving the channel (even when it was subscribed again since)
        self._leaving: dict[bytes, int] = {}

    def add(self, name: bytes) -> asyncio.Future[None] | None:
        """Serve `name` here; when the link is up, the future of Redis's confirmation."""
        self.channels.add(name)
        if not self.up or self._writer is None:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(future)
        self._writer.write(_command(b"SSUBSCRIBE", name))
        return future

    def remove(self, name: bytes) -> None:
        self.channels.discard(name)
        if self.up and self._writer is not None:
            self._leaving[name] = self._leaving.get(name, 0) + 1
            self._writer.write(_command(b"SUNSUBSCRIBE", name))

    async def serve(self) -> None:
        """Connect, subscribe every channel, deliver messages; returns only by raising."""
        reader, writer = await self.owner.login.open(self.address)
        self._writer = writer
        self._leaving.clear()
        try:
            await self._read(reader, writer)
        finally:
            self._writer = None
            writer.close()
            lost = self.up
            self.up = False
            for futures in self._waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(ConnectionError("redis pub/sub link lost"))
            self._waiting.clear()
            if lost:
                self.owner.on_lost(set(self.channels))

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        pending = set(self.channels)
        writer.write(_command(b"SUBSCRIBE", KEEPER))
        # one SSUBSCRIBE per channel: in a cluster, one command's channels must share a slot
        for name in pending:
            writer.write(_command(b"SSUBSCRIBE", name))
        pending.add(KEEPER)
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        while True:
            try:
                async with asyncio.timeout(PING_EVERY_S):
                    chunk = await reader.read(65536)
            except TimeoutError:
                if loop.time() - last_heard > DEAD_AFTER_S:
                    raise TimeoutError("redis pub/sub link silent") from None
                writer.write(_command(b"PING"))
                continue
            if not chunk:
                raise ConnectionError("redis closed the pub/sub connection")
            last_heard = loop.time()
            parser.feed(chunk)
            while (reply := parser.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    # MOVED (the slot is served elsewhere), or a refused command: start over
                    raise SlotMoved(f"redis refused a subscription: {reply}")
                if not isinstance(reply, list) or len(reply) < 2:
                    continue
                kind, name = reply[0], reply[1]
                if kind in (b"smessage", b"message"):
                    self.owner.on_message(name, reply[2])
                elif kind in (b"ssubscribe", b"subscribe"):
                    for future in self._waiting.pop(name, ()):
                        if not future.done():
                            future.set_result(None)
                    if name in pending:
                        pending.discard(name)
                        if not pending and not self.up:
                            self.up = True
                            self.owner.restored(self, set(self.channels))
                    elif self.up:
                        # a channel added while up (a new room, or one moved here)
                        self.owner.restored(self, {name})
                elif kind == b"sunsubscribe":
                    asked = self._leaving.get(name, 0)
                    if asked > 1:
                        self._leaving[name] = asked - 1
                    elif asked == 1:
                        del self._leaving[name]
                    elif name in self.channels:
                        # one we did not ask for: the cluster moved the channel's slot
                        raise SlotMoved(f"redis moved {name!r} to another node")


class PubSubLink:
    """Subscribe/unsubscribe channels; messages go to `on_message(channel, data)` in order per
    channel. `connected` is set while every primary (and every node serving our channels) is
    linked."""

    def __init__(
        self,
        url: str,
        on_message: Callable[[bytes, bytes], None],
        *,
        on_lost: Callable[[Channels], None],
        on_restored: Callable[[Channels], None],
        cluster: bool = False,
    ) -> None:
        target = cluster_target(url, cluster=cluster)
        if target is None:
            options = parse_url(url)
            self.cluster = False
            self._seeds: tuple[Address, ...] = (
                (str(options.get("host", "localhost")), int(options.get("port", 6379))),
            )
            self.login = _Login(
                options.get("username"),
                options.get("password"),
                options.get("connection_class") is SSLConnection,
            )
        else:
            self.cluster = True
            self._seeds = target.seeds
            self.login = _Login(target.username, target.password, target.tls)
        self.on_message = on_message
        self._on_lost = on_lost
        self._on_restored = on_restored
        # slot ranges (start, end, primary) as the cluster last said
        self._slots: list[tuple[int, int, Address]] = []
        self._nodes: dict[Address, _NodeLink] = {}
        self._placed: dict[bytes, _NodeLink] = {}
        self._stale = asyncio.Event()  # a link failed: ask the cluster where slots are
        self.connected = asyncio.Event()

    # --- the hub's side ---

    async def subscribe(self, channel: str) -> None:
        """Subscribe and wait until Redis confirms: from then on nothing published is missed."""
        name = channel.encode()
        node = self._placed.get(name)
        if node is None:
            node = self._node(self._owner(name))
            self._placed[name] = node
        future = node.add(name)
        if future is None:
            self._placed.pop(name, None)
            node.channels.discard(name)
            raise ConnectionError("redis pub/sub link is down")
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await future
        except BaseException:
            self.unsubscribe(channel)
            raise

    def unsubscribe(self, channel: str) -> None:
        node = self._placed.pop(channel.encode(), None)
        if node is not None:
            node.remove(channel.encode())

    def up_for(self, channel: str) -> bool:
        """Whether a subscription to `channel` can be made now."""
        return bool(self._slots) and self._node(self._owner(channel.encode())).up

    async def run(self) -> None:
        """Keep every needed node linked until cancelled: reconnect with backoff, log once per
        outage, move channels when the cluster moved their slots."""
        backoff = 0.1
        failing = False
        try:
            while True:
                try:
                    await self._learn_slots()
                except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
                    if not failing:
                        log.warning("redis cluster slots unknown, retrying with backoff: %r", exc)
                        failing = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                if failing:
                    log.info("redis cluster slots known again")
                    failing = False
                backoff = 0.1
                self._place_all()
                await self._stale.wait()
                self._stale.clear()
                # let a failover settle a little before asking again
                await asyncio.sleep(0.2)
        finally:
            for node in self._nodes.values():
                if node.task is not None:
                    node.task.cancel()
            await asyncio.gather(
                *(n.task for n in self._nodes.values() if n.task), return_exceptions=True
            )

    # --- node links ---

    def _owner(self, name: bytes) -> Address:
        if not self.cluster:
            return self._seeds[0]
        slot = key_slot(name)
        for start, end, address in self._slots:
            if start <= slot <= end:
                return address
        raise ConnectionError(f"no redis node serves slot {slot}")

    def _node(self, address: Address) -> _NodeLink:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = _NodeLink(address, self)
            node.task = asyncio.create_task(self._keep(node), name=f"hub-pubsub-{address[1]}")
        return node

    def _place_all(self) -> None:
        """Link every primary, and put each channel on the node that serves its slot now (a
        failover, a migration): the first subscribe to a room then finds its shard linked."""
        for _, _, address in self._slots:
            self._node(address)
        moved: dict[tuple[Address, Address], int] = {}
        for name, node in list(self._placed.items()):
            owner = self._owner(name)
            if owner != node.address:
                node.remove(name)
                self._placed[name] = target = self._node(owner)
                target.add(name)  # confirmed (and reported restored) by that node's link
                moved[node.address, owner] = moved.get((node.address, owner), 0) + 1
        for (source, target_address), count in moved.items():
            log.info(
                "redis pub/sub: %d channels moved from %s:%d to %s:%d",
                count,
                *source,
                *target_address,
            )
        self._update_connected()

    async def _keep(self, node: _NodeLink) -> None:
        while True:
            try:
                await node.serve()
            except (OSError, ConnectionError, TimeoutError, hiredis.ProtocolError) as exc:
                if not node.failing:
                    log.warning(
                        "redis pub/sub link to %s:%d lost, reconnecting with backoff: %r",
                        *node.address,
                        exc,
                    )
                    node.failing = True
            self._update_connected()
            self._stale.set()
            await asyncio.sleep(node.backoff)
            node.backoff = min(node.backoff * 2, MAX_BACKOFF_S)
            if not node.channels and not self._serves(node.address):
                # a node the cluster no longer counts on (a dead primary, replaced)
                del self._nodes[node.address]
                log.info("redis pub/sub link to %s:%d retired", *node.address)
                self._update_connected()
                return

    def _serves(self, address: Address) -> bool:
        return any(primary == address for _, _, primary in self._slots)

    def restored(self, node: _NodeLink, channels: set[bytes]) -> None:
        if node.failing:
            log.info("redis pub/sub link to %s:%d restored", *node.address)
            node.failing = False
        node.backoff = 0.1
        self._update_connected()
        self._on_restored({c for c in channels if self._placed.get(c) is node})

    def on_lost(self, channels: set[bytes]) -> None:
        self._update_connected()
        self._on_lost(channels)

    def _update_connected(self) -> None:
        primaries = {address for _, _, address in self._slots}
        up = bool(primaries) and all(
            node.up for node in self._nodes.values() if node.address in primaries or node.channels
        )
        if up:
            self.connected.set()
        else:
            self.connected.clear()

    async def _learn_slots(self) -> None:
        if not self.cluster:
            self._slots = [(0, 16383, self._seeds[0])]
            return
        known = [a for _, _, a in self._slots] + list(self._seeds)
        last: Exception | None = None
        for address in dict.fromkeys(known):
            try:
                reader, writer = await self.login.open(address)
                try:
                    writer.write(_command(b"CLUSTER", b"SLOTS"))
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        reply = await _read_reply(reader)
                finally:
                    writer.close()
            except (OSError, ConnectionError, TimeoutError) as exc:
                last = exc
                continue
            if not isinstance(reply, list) or not reply:
                last = ValueError(f"CLUSTER SLOTS from {address} said {reply!r}")
                continue
            slots = []
            for start, end, primary, *_ in reply:
                host = primary[0].decode() or address[0]
                slots.append((int(start), int(end), (host, int(primary[1]))))
            self._slots = sorted(slots)
            return
        raise ConnectionError(f"no redis cluster node answered CLUSTER SLOTS: {last!r}")
