"""The hub node: sessions, channel feeds, the protocol commands, and the node's background loops.

One `Hub` per process. It owns the node's single pub/sub link (one Redis subscription per channel
with local subscribers, never per viewer), the feeds that fan publications out, the heartbeat
that pings every session and disconnects those whose token ran out unrefreshed, and the loop
that reports viewer counts across nodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Collection, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from core.events import channel_keys, room_channel
from core.loops import run_periodically
from core.resources import Resources
from live.chat import (
    CHAT_PREFIX,
    CONTROL_CHANNEL,
    Chat,
    ChatFeed,
    decode_control,
)
from live.collector import CHECK_EVERY_S, QuietCollector
from live.errors import (
    BAD_REQUEST,
    EXPIRED,
    FLOODING,
    NO_PONG,
    SHUTDOWN,
    STALE,
    AlreadySubscribed,
    Disconnect,
    HubBadRequest,
    InternalError,
    LimitExceeded,
    MethodNotFound,
    PermissionDenied,
    TooManyRequests,
    UnknownChannel,
    UnrecoverablePosition,
)
from live.events import ViewersChanged
from live.feed import Feed
from live.history import StreamReader, StreamState
from live.metrics import HUB_METRICS
from live.protocol import (
    FLAG_REJECT_UNRECOVERED,
    Command,
    ConnectRequest,
    ConnectResult,
    Empty,
    Publication,
    RefreshRequest,
    RefreshResult,
    Reply,
    SubscribeRequest,
    SubscribeResult,
    UnsubscribeRequest,
    decode_commands,
    encode,
    error_reply,
    hub_error_for,
    subscribe_reply,
)
from live.pubsub import PubSubLink
from live.session import PING_FRAME, Session
from live.snapshot import SharedSnapshots
from live.tokens import Expiries, connect_credentials, refresh_credentials
from live.viewers import VIEWERS_INTERVAL_S, ViewerCounts

log = logging.getLogger("livesell.hub")

VERSION = "livesell 0.1.0"
MAX_CHANNELS_PER_SESSION = 16
COMMANDS_PER_S = 20.0  # sustained rate per connection
COMMAND_BURST = 40.0  # bucket size; a client this far past empty is flooding and is dropped
REDIS_READS_IN_FLIGHT = 64  # concurrent history reads (a mass reconnect must not exhaust the pool)
# the coalesce key `viewers.changed` publications carry
_VIEWERS_CHANGED = ViewersChanged(room_id="", viewers=0).coalesce_key().encode()
_decode_viewers_changed = msgspec.json.Decoder(ViewersChanged).decode


# a command waiting on I/O: (command, its coroutine, the frame's commands, the index after it)
Waiting = tuple[Command, Coroutine[Any, Any, None], list[Command], int]


def _canonical_id(text: str) -> bool:
    """A room id as the database writes it: digits only, no sign, no leading zero, in range.
    Any other spelling of a room would be a channel of its own that no publication reaches."""
    return text.isascii() and text.isdigit() and text[0] != "0" and len(text) <= 18


class Hub:
    def __init__(
        self, res: Resources, node_id: str | None = None, *, connect_timeout_s: float = 10.0
    ) -> None:
        self.res = res
        self.settings = res.settings
        # the event loop the hub runs on, asked once: on Python 3.11 every
        # `asyncio.get_running_loop()` is a getpid() system call, several per join
        self.loop = asyncio.get_running_loop()
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.feeds: dict[str, Feed] = {}
        self._by_key: dict[bytes, Feed] = {}
        self.sessions: set[Session] = set()
        # connections that have not said connect yet (nor, maybe, finished their handshake), by
        # the loop time they must have by; insertion order is deadline order
        self.connect_timeout_s = connect_timeout_s
        self._unconnected: dict[Session, float] = {}
        self._closed: asyncio.Future[None] | None = None
        self._buckets: list[set[Session]] = [set() for _ in range(self.settings.hub_ping_s)]
        self._reader = StreamReader(
            res.redis, self.settings.hub_history_size, self.settings.hub_history_ttl_s
        )
        self._viewers = ViewerCounts(res.redis, self.node_id)
        self.chat = Chat(res)
        self.totals: dict[str, int] = {}
        self._reported: set[str] = set()
        assert self.settings.redis_url
        self.link = PubSubLink(
            self.settings.redis_url,
            self._on_publication,
            on_lost=self._on_link_lost,
            on_restored=self._on_link_restored,
            cluster=self.settings.redis_cluster,
        )
        self._redis_reads = asyncio.Semaphore(REDIS_READS_IN_FLIGHT)
        self._snapshots = SharedSnapshots(
            res.pool, lambda room_id: self.totals.get(room_id, 0), clock=self.loop.time
        )
        # plain subscribes' stream position reads in flight, by channel (done: None either way)
        self._position_reads: dict[str, asyncio.Future[None]] = {}
        # recovering subscribes' reads still waiting for their turn (`_redis_reads`), by channel
        # and position: the next recoveries from the same position share them
        self._queued_recoveries: dict[tuple[str, int, str], asyncio.Future[StreamState]] = {}
        # per channel: (position, epoch, snapshot bytes, the encoded plain subscribe result)
        self._plain_results: dict[str, tuple[int, str, bytes | None, bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_s = self.settings.hub_flush_ms / 1000
        # sessions by their token's expiry; `expiries.close_delay_s` is the grace after `exp`
        self.expiries = Expiries()
        # full garbage collections: held back during join storms, made when the hub is quiet
        self.collector = QuietCollector()
        HUB_METRICS.watch(self)

    # --- lifecycle ---

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Hub]:
        loops = [
            asyncio.create_task(self.link.run(), name="hub-pubsub"),
            asyncio.create_task(self._heartbeat(), name="hub-heartbeat"),
            asyncio.create_task(self._collect_when_quiet(), name="hub-collector"),
            asyncio.create_task(
                run_periodically("hub viewer counts", self._report_viewers, VIEWERS_INTERVAL_S),
                name="hub-viewers",
            ),
        ]
        try:
            yield self
        finally:
            self.shutdown()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                async with asyncio.timeout(2):
                    await self._report_viewers()  # this node's viewers are gone now
            except Exception as exc:  # noqa: BLE001 - best effort; stale reports expire anyway
                log.info("final viewer report skipped: %r", exc)

    def shutdown(self) -> None:
        """Disconnect every session with a reconnect code: SDKs move to another node. A
        connection still in its opening handshake is dropped."""
        for session in list(self.sessions):
            session.disconnect(SHUTDOWN)
        for session in list(self._unconnected):
            if session not in self.sessions:
                session.abort()

    async def all_closed(self) -> None:
        """Wait until every connection of the node has ended."""
        if self.sessions or self._unconnected:
            self._closed = self.loop.create_future()
            await self._closed

    def abort_all(self) -> None:
        for session in [*self.sessions, *self._unconnected]:
            session.abort()

    def opened(self, session: Session) -> None:
        """A TCP connection arrived: it must say connect within `connect_timeout_s`."""
        self._unconnected[session] = self.loop.time() + self.connect_timeout_s
        self.collector.opened += 1

    def attach(self, session: Session) -> None:
        """Its WebSocket handshake succeeded."""
        self.sessions.add(session)

    def detach(self, session: Session) -> None:
        """Its connection ended."""
        self.sessions.discard(session)
        self._unconnected.pop(session, None)
        self.collector.closed += 1
        self.expiries.discard(session)
        self._ping_bucket(session).discard(session)
        for feed in list(session.feeds.values()):
            feed.remove(session)
        closed = self._closed
        if closed is not None and not closed.done() and not self.sessions and not self._unconnected:
            closed.set_result(None)

    # --- commands ---

    def receive(self, session: Session, frame: bytes) -> Waiting | None:
        """Handle the commands of one inbound frame, in order, as far as they need no I/O.
        A command that waits on Redis or PostgreSQL (subscribe, publish) is returned with the
        commands after it, for `finish`; None when the frame was handled whole."""
        try:
            commands = decode_commands(frame)
        except HubBadRequest:
            session.disconnect(BAD_REQUEST)
            return None
        return self._run(session, commands, 0)

    async def finish(self, session: Session, frame: Waiting) -> None:
        """Finish a frame `receive` left waiting on I/O."""
        waiting: Waiting | None = frame
        while waiting is not None:
            command, pending, commands, index = waiting
            try:
                await pending
            except Disconnect as reason:
                session.disconnect(reason)
                return
            except Exception as exc:  # noqa: BLE001 - every failure becomes the client's reply
                self._failed(session, command, exc)
            waiting = self._run(session, commands, index)

    def _run(self, session: Session, commands: list[Command], start: int) -> Waiting | None:
        now = self.loop.time()
        for index in range(start, len(commands)):
            command = commands[index]
            if session.closing:
                return None
            balance = session.take_token(COMMANDS_PER_S, COMMAND_BURST, now)
            if balance < -COMMAND_BURST:
                session.disconnect(FLOODING)
                return None
            if command.is_pong:
                session.awaiting_pong = False
                continue
            if balance < 0:
                session.send(error_reply(command.id, TooManyRequests()))
                continue
            try:
                pending = self._dispatch(session, command)
            except Disconnect as reason:
                session.disconnect(reason)
                return None
            except Exception as exc:  # noqa: BLE001 - every failure becomes the client's reply
                self._failed(session, command, exc)
                continue
            if pending is not None:
                return command, pending, commands, index + 1
        return None

    def _failed(self, session: Session, command: Command, exc: Exception) -> None:
        error = hub_error_for(exc)
        if isinstance(error, InternalError):
            log.warning("command %s failed: %r", command.id, exc)
        session.send(error_reply(command.id, error))

    def _dispatch(self, session: Session, command: Command) -> Coroutine[Any, Any, None] | None:
        """Answer `command` now, or return the coroutine that will (it waits on I/O)."""
        match command:
            case Command(connect=ConnectRequest() as request):
                session.send(encode(Reply(id=command.id, connect=self._connect(session, request))))
            case _ if not session.connected:
                raise BAD_REQUEST.fresh()  # anything before connect is a protocol violation
            case Command(subscribe=SubscribeRequest() as request):
                self._may_subscribe(session, request.channel)
                if not self._subscribe_now(session, command.id, request):
                    return self._subscribe(session, command.id, request)
            case Command(unsubscribe=UnsubscribeRequest() as request):
                feed = session.feeds.get(request.channel)
                if feed is not None:
                    feed.remove(session)
                session.send(encode(Reply(id=command.id, unsubscribe=Empty())))
            case Command(refresh=RefreshRequest() as request):
                session.send(encode(Reply(id=command.id, refresh=self._refresh(session, request))))
            case Command(publish=request) if request is not None:
                return self._publish(session, command.id, request)
            case _:
                raise MethodNotFound()
        return None

    async def _publish(self, session: Session, command_id: int, request: Any) -> None:
        await self.chat.publish(session, request)
        session.send(encode(Reply(id=command_id, publish=Empty())))

    def _connect(self, session: Session, request: ConnectRequest) -> ConnectResult:
        if session.connected:
            raise BAD_REQUEST.fresh()
        exp, ttl = None, 0
        if request.token:
            credentials = connect_credentials(self.res.tokens, request.token)
            session.principal, exp, ttl = credentials.principal, credentials.exp, credentials.ttl
            session.name = credentials.name
        session.connected = True
        self._unconnected.pop(session, None)
        self.expiries.track(session, exp)
        session.fill_bucket(COMMAND_BURST, self.loop.time())
        self._ping_bucket(session).add(session)
        return ConnectResult(
            client=session.client_id,
            version=VERSION,
            ping=self.settings.hub_ping_s,
            pong=True,
            expires=exp is not None,
            ttl=ttl,
        )

    def _refresh(self, session: Session, request: RefreshRequest) -> RefreshResult:
        credentials = refresh_credentials(self.res.tokens, request.token, session.user_id)
        session.principal = credentials.principal
        session.name = credentials.name
        self.expiries.track(session, credentials.exp)
        return RefreshResult(expires=credentials.exp is not None, ttl=credentials.ttl)

    def _authorize(self, session: Session, channel: str) -> None:
        kind, sep, name = channel.partition(":")
        if sep and kind in ("room", "chat") and _canonical_id(name):
            return
        kind, sep, name = channel.partition("#")
        if sep and kind in ("dashboard", "user") and name:
            if session.principal is None or session.user_id != name:
                raise PermissionDenied()
            return
        raise UnknownChannel()

    def _may_subscribe(self, session: Session, channel: str) -> None:
        self._authorize(session, channel)
        if channel in session.feeds:
            raise AlreadySubscribed()
        if len(session.feeds) >= MAX_CHANNELS_PER_SESSION:
            raise LimitExceeded()

    def _subscribe_now(self, session: Session, command_id: int, request: SubscribeRequest) -> bool:
        """Answer a plain subscribe from what the node holds, without I/O: a ready feed that
        vouches for the stream position and a snapshot fetch it may share (a join storm's
        common case). False: `_subscribe` must read Redis or PostgreSQL."""
        feed = self.feeds.get(request.channel)
        if (
            feed is None
            or request.recover
            or isinstance(feed, ChatFeed)
            or not feed.ready.done()
            or feed.ready.exception() is not None
        ):
            return False
        position = feed.known_position()
        if position is None:
            return False
        data = None
        if feed.room_id is not None:
            data = self._snapshots.shared(feed, position, self.loop.time())
            if data is None:
                return False
        feed.join(session)
        self._subscribed(
            session, command_id, request, feed, StreamState(position, feed.epoch, []), data
        )
        return True

    async def _subscribe(
        self, session: Session, command_id: int, request: SubscribeRequest
    ) -> None:
        """A subscribe that reads the stream position or history (Redis) and the snapshot
        (PostgreSQL); `_may_subscribe` has passed."""
        channel = request.channel
        feed = await self._feed(channel)
        if session.closing:
            self._drop_if_empty(feed)
            return
        feed.join(session)
        loop = self.loop
        try:
            if isinstance(feed, ChatFeed):
                recover_from = (request.offset, request.epoch) if request.recover else None
                async with self._redis_reads:
                    state, data = await self.chat.subscribe_state(feed, session, recover_from)
                feed.note_read(state.top, state.epoch)
                recovered = request.recover and state.missed is not None
                if request.recover and not recovered and request.flag & FLAG_REJECT_UNRECOVERED:
                    raise UnrecoverablePosition()
                self._subscribed(session, command_id, request, feed, state, data)
                return
            known = None if request.recover else feed.known_position()
            reading = self._position_reads.get(channel)
            if known is None and not request.recover and reading is not None:
                # a storm's first wave: once one read lands, the feed vouches for the others
                await asyncio.shield(reading)
                known = feed.known_position()
            if known is not None:
                state = StreamState(known, feed.epoch, [])
            else:
                state = await self._read_state(feed, request)
            read_at = loop.time()
            recovered = request.recover and state.missed is not None
            if request.recover and not recovered and request.flag & FLAG_REJECT_UNRECOVERED:
                raise UnrecoverablePosition()
            room_data: bytes | None = None
            # a recovered subscriber keeps its state and applies what it missed: no snapshot
            if feed.room_id is not None and not recovered:
                room_data = self._snapshots.shared(feed, state.top, read_at)
                if room_data is None:
                    room_data = await self._snapshots.fetch(feed, state.top, read_at)
        except BaseException:
            if session.feeds.get(channel) is feed:
                feed.remove(session)
            raise
        self._subscribed(session, command_id, request, feed, state, room_data)

    async def _read_state(self, feed: Feed, request: SubscribeRequest) -> StreamState:
        """The stream's position (and, recovering, what the subscriber missed) from Redis;
        plain subscribes arriving meanwhile wait for this read rather than make their own."""
        channel = feed.channel
        if request.recover:
            return await self._read_recovery(feed, (request.offset, request.epoch))
        reading = None
        if channel not in self._position_reads:
            reading = self.loop.create_future()
            self._position_reads[channel] = reading
        try:
            async with self._redis_reads:
                state = await self._reader.state(channel)
            feed.note_read(state.top, state.epoch)
        finally:
            if reading is not None:
                if self._position_reads.get(channel) is reading:
                    del self._position_reads[channel]
                reading.set_result(None)
        return state

    async def _read_recovery(self, feed: Feed, since: tuple[int, str]) -> StreamState:
        """What a subscriber at `since` missed, from Redis. After a node dies its viewers come
        back from the same position at once: while a read from that position waits for its
        turn, the next recoveries from it wait for that read instead of queueing their own. A
        read already running is not shared: it may have read the stream before the newcomer
        joined its feed, and what was published between the two would be neither read nor
        held for it."""
        key = (feed.channel, *since)
        while (queued := self._queued_recoveries.get(key)) is not None:
            try:
                return await asyncio.shield(queued)
            except asyncio.CancelledError:
                if not queued.cancelled():
                    raise  # this subscribe was cancelled, not the read
                # the subscribe that queued the read was cancelled before its turn: read again
        mine: asyncio.Future[StreamState] = self.loop.create_future()
        self._queued_recoveries[key] = mine
        try:
            async with self._redis_reads:
                if self._queued_recoveries.get(key) is mine:
                    del self._queued_recoveries[key]  # running now: no one else may join it
                state = await self._reader.state(feed.channel, recover_from=since)
            feed.note_read(state.top, state.epoch)
        except BaseException as exc:
            if self._queued_recoveries.get(key) is mine:
                del self._queued_recoveries[key]
            if isinstance(exc, asyncio.CancelledError):
                mine.cancel()
            else:
                mine.set_exception(exc)
                mine.exception()  # retrieved here: those waiting on it may all have gone
            raise
        mine.set_result(state)
        return state

    def _subscribed(
        self,
        session: Session,
        command_id: int,
        request: SubscribeRequest,
        feed: Feed,
        state: StreamState,
        data: bytes | None,
    ) -> None:
        """Reply to a subscribe whose state was read, and start its live delivery."""
        if session.closing:
            return
        if session.feeds.get(feed.channel) is not feed or session not in feed.joining:
            raise InternalError("channel resynchronised during subscribe; retry")
        recovered = request.recover and state.missed is not None
        if not request.recover:
            reply = subscribe_reply(command_id, self._plain_result(feed.channel, state, data))
            held = feed.activate(session, state.top)
            session.send(reply, *(p for _, p in held))
            return
        missed = state.missed if recovered and state.missed else []
        result = SubscribeResult(
            recoverable=True,
            epoch=state.epoch,
            offset=state.top,
            was_recovering=request.recover,
            recovered=recovered,
            publications=[Publication(msgspec.Raw(e.data), e.offset) for e in missed],
            data=None if data is None else msgspec.Raw(data),
        )
        # reply and the publications held meanwhile leave in one frame, before any later tick
        held = feed.activate(session, state.top)
        session.send(encode(Reply(id=command_id, subscribe=result)), *(p for _, p in held))

    def _plain_result(self, channel: str, state: StreamState, data: bytes | None) -> bytes:
        """A subscribe result without recovery, encoded once for every joiner that gets the
        same position and the same snapshot bytes."""
        cached = self._plain_results.get(channel)
        if (
            cached is not None
            and cached[0] == state.top
            and cached[1] == state.epoch
            and cached[2] is data
        ):
            return cached[3]
        result = SubscribeResult(
            recoverable=True,
            epoch=state.epoch,
            offset=state.top,
            data=None if data is None else msgspec.Raw(data),
        )
        encoded = encode(result)
        self._plain_results[channel] = (state.top, state.epoch, data, encoded)
        return encoded

    async def _feed(self, channel: str) -> Feed:
        feed = self.feeds.get(channel)
        if feed is not None:
            if feed.ready.done():
                feed.ready.result()  # raises when its Redis subscription failed
            else:
                await asyncio.shield(feed.ready)
            return feed
        if not self.link.up_for(channel_keys(channel)[2]):
            raise InternalError("redis pub/sub link is down")
        if channel.startswith(CHAT_PREFIX):
            host_id = await self.chat.host_of(channel.removeprefix(CHAT_PREFIX))
            feed = self.feeds.get(channel)  # another subscribe may have made it meanwhile
            if feed is not None:
                await asyncio.shield(feed.ready)
                return feed
            feed = ChatFeed(
                channel,
                flush_s=self._flush_s,
                max_held=self.settings.hub_history_size,
                on_empty=self._drop_feed,
                host_id=host_id,
                fanout_per_s=self.chat.fanout_per_s,
            )
        else:
            feed = Feed(
                channel,
                flush_s=self._flush_s,
                max_held=self.settings.hub_history_size,
                on_empty=self._drop_feed,
            )
        key = channel_keys(channel)[2]
        self.feeds[channel] = feed
        self._by_key[key.encode()] = feed
        try:
            await self.link.subscribe(key)
        except (ConnectionError, TimeoutError, OSError) as exc:
            feed.ready.set_exception(InternalError(f"subscribe failed: {exc!r}"))
            feed.ready.exception()  # retrieved: waiters re-raise it
            self._forget(feed)
            raise InternalError("redis pub/sub subscribe failed") from None
        feed.ready.set_result(None)
        return feed

    def _drop_if_empty(self, feed: Feed) -> None:
        if not feed:
            self._drop_feed(feed)

    def _drop_feed(self, feed: Feed) -> None:
        if self.feeds.get(feed.channel) is not feed:
            return
        self._forget(feed)
        self.link.unsubscribe(channel_keys(feed.channel)[2])

    def _forget(self, feed: Feed) -> None:
        if self.feeds.get(feed.channel) is feed:
            del self.feeds[feed.channel]
        self._by_key.pop(channel_keys(feed.channel)[2].encode(), None)
        self._snapshots.forget(feed.channel)
        self._plain_results.pop(feed.channel, None)
        feed.close()

    # --- pub/sub ---

    def _on_publication(self, key: bytes, message: bytes) -> None:
        feed = self._by_key.get(key)
        if feed is None:
            if key == CONTROL_CHANNEL:
                self._on_control(message)
            return
        try:
            raw_offset, epoch, coalesce_key, data = message.split(b"\n", 3)
            offset = int(raw_offset)
        except ValueError:
            log.warning("malformed publication on %r ignored", key)
            return
        feed.deliver(offset, epoch.decode(), coalesce_key, data)
        if coalesce_key == _VIEWERS_CHANGED and feed.room_id is not None:
            self._count_in_snapshot(feed, offset, data)

    def _count_in_snapshot(self, feed: Feed, offset: int, data: bytes) -> None:
        if feed.known_position() != offset:
            return  # a duplicate, or a feed that cannot vouch for its position
        try:
            event = _decode_viewers_changed(data)
        except msgspec.MsgspecError:
            log.warning("malformed viewers.changed on %s ignored", feed.channel)
            return
        self._snapshots.counted(feed, offset, event.viewers)

    def _on_control(self, message: bytes) -> None:
        """A moderation decision every node acts on: a ban ends the user's chat subscription."""
        try:
            kick = decode_control(message)
        except msgspec.MsgspecError:
            log.warning("malformed control message ignored")
            return
        feed = self.feeds.get(kick.kick)
        if isinstance(feed, ChatFeed):
            feed.kick(kick.user, "banned")

    def _on_link_lost(self, keys: Collection[bytes]) -> None:
        for key in keys:
            feed = self._by_key.get(key)
            if feed is not None:
                feed.paused = True

    def _on_link_restored(self, keys: Collection[bytes]) -> None:
        feeds = [f for f in map(self._by_key.get, keys) if f is not None and f.paused]
        if feeds:
            task = asyncio.create_task(self._verify_feeds(feeds))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _verify_feeds(self, feeds: list[Feed]) -> None:
        """After an outage: a feed whose stream moved on while the link was down resynchronises
        its subscribers (they recover the gap from history); the others simply carry on."""
        for feed in feeds:
            if not feed.paused or self.feeds.get(feed.channel) is not feed:
                continue
            try:
                async with self._redis_reads:
                    state = await self._reader.state(feed.channel)
            except Exception as exc:  # noqa: BLE001 - cannot verify: resynchronise to be safe
                log.info(
                    "%s: stream unreadable after outage (%r); resynchronising", feed.channel, exc
                )
                feed.resync("insufficient state")
                feed.resume()
                continue
            feed.resume(state.top, state.epoch)

    # --- loops ---

    def _ping_bucket(self, session: Session) -> set[Session]:
        """The bucket of sessions pinged in the same second: by the session's hash (its
        address), which spreads sessions evenly over the interval (pings and pong checks with
        them) and finds a closed session's bucket without looking in the others."""
        return self._buckets[hash(session) % len(self._buckets)]

    async def _heartbeat(self) -> None:
        """Each second, ping one bucket of sessions; a session that left the previous ping
        unanswered is disconnected (3012 no pong). Sessions whose token expired unrefreshed
        are disconnected too (3005)."""
        tick = 0
        while True:
            await asyncio.sleep(1)
            tick += 1
            for session in self.expiries.due(time.time()):
                session.disconnect(EXPIRED)
            self._close_unconnected()
            for session in list(self._buckets[tick % len(self._buckets)]):
                if session.awaiting_pong:
                    session.disconnect(NO_PONG)
                else:
                    session.awaiting_pong = True
                    session.write_frame(PING_FRAME)

    async def _collect_when_quiet(self) -> None:
        """Full garbage collections held back while connections open, made when the hub is
        quiet (`live.collector`)."""
        try:
            while True:
                await asyncio.sleep(CHECK_EVERY_S)
                collected_s = self.collector.check(len(self.sessions))
                if collected_s is not None:
                    HUB_METRICS.collected(collected_s)
        finally:
            self.collector.release()

    def _close_unconnected(self) -> None:
        """Close the connections that did not say connect in time: 3502 once the WebSocket is
        open, the bare TCP connection while its handshake is still unfinished."""
        now = self.loop.time()
        unconnected = self._unconnected
        while unconnected:
            session = next(iter(unconnected))
            if unconnected[session] > now:
                return
            del unconnected[session]
            if session in self.sessions:
                session.disconnect(STALE)
            else:
                session.abort()

    async def _report_viewers(self) -> None:
        counts = {f.room_id: f.audience() for f in self.feeds.values() if f.room_id is not None}
        for room_id in self._reported - counts.keys():
            counts[room_id] = 0
        reports = await self._viewers.report(counts)
        # a room is reported again while it has viewers here, or its total is still to announce
        self._reported = {
            room_id for room_id, count in counts.items() if count > 0 or reports[room_id].pending
        }
        for room_id, (total, announce, _) in reports.items():
            self.totals[room_id] = total
            if announce:
                await self.res.publisher.publish(
                    room_channel(room_id), ViewersChanged(room_id=room_id, viewers=total)
                )
        for room_id in list(self.totals):
            if room_id not in counts:
                del self.totals[room_id]
