"""One channel on one hub node: its subscribers, and the tick that fans publications out to them.

Publications arrive from the node's single pub/sub link in offset order. Each is encoded once
as a push; within one flush tick pushes accumulate (latest-value events replace the previous
one with the same coalesce key), then the tick joins them into ONE frame whose bytes are written
to every subscriber's transport.

A subscriber passes through three states so that, whatever the timing between the pub/sub link
and the history read, it gets every publication exactly once and in order:

  joining   its subscribe is reading the stream position/history; publications that arrive
            meanwhile are held for it
  skipping  its reply went out with position T; publications up to T (already in the reply)
            are filtered out of its frames until the feed has passed T
  live      gets the shared frame bytes
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from live.errors import INSUFFICIENT_STATE
from live.metrics import HUB_METRICS, SENT
from live.protocol import UNSUBSCRIBE_INSUFFICIENT_STATE, publication_push, unsubscribe_push
from live.session import Session, text_frame

log = logging.getLogger("livesell.hub.feed")

Held = list[tuple[int, bytes]]


# roles whose connections are not counted among a room's viewers
STAFF_ROLES = ("host", "admin")


class Feed:
    def __init__(
        self,
        channel: str,
        *,
        flush_s: float,
        max_held: int,
        on_empty: Callable[[Feed], None],
    ) -> None:
        self.channel = channel
        self.room_id = channel.removeprefix("room:") if channel.startswith("room:") else None
        self.flush_s = flush_s
        self.max_held = max_held
        self._on_empty = on_empty
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.live: dict[Session, asyncio.WriteTransport] = {}
        self.skipping: dict[Session, int] = {}
        self.joining: dict[Session, Held] = {}
        self.top = 0  # highest offset received from pub/sub
        self.epoch = ""
        # the highest stream position a subscribe read from Redis in this epoch: with the link
        # unbroken since, it answers the next plain subscribe without another Redis round trip
        self.read_top = 0
        self.read_epoch = ""
        self._pending: list[tuple[int, bytes] | None] = []
        self._pending_keys: dict[bytes, int] = {}
        self._flush_at: asyncio.TimerHandle | None = None
        # while the pub/sub link is (or was just) down, nothing goes out until the stream is
        # checked for publications missed meanwhile
        self.paused = False
        self.gap = False
        self.delivered = 0  # pushes written to sockets (metrics, load tests)

    def __len__(self) -> int:
        return len(self.live) + len(self.skipping) + len(self.joining)

    def audience(self) -> int:
        """Subscribers who watch: all but hosts and admins (the host console, an operator's
        look), so that "N watching" on the pages counts viewers."""
        staff = 0
        for members in (self.live, self.skipping, self.joining):
            for session in members:
                if session.principal is not None and session.principal.has_any(STAFF_ROLES):
                    staff += 1
        return len(self) - staff

    # --- membership ---

    def join(self, session: Session) -> None:
        self.joining[session] = []
        session.feeds[self.channel] = self

    def note_read(self, top: int, epoch: str) -> None:
        """A subscribe read the stream's position (`top` in `epoch`) from Redis."""
        if not self.epoch:
            self.epoch = epoch
        if epoch == self.epoch:
            self.read_top = max(self.read_top, top) if self.read_epoch == epoch else top
            self.read_epoch = epoch

    def known_position(self) -> int | None:
        """The stream position without asking Redis, when the feed can vouch for it: a read in
        the current epoch and an unbroken pub/sub link since. Never lower than a fresh read
        could have answered a moment ago; publications after it arrive live as usual."""
        if self.paused or self.gap or not self.epoch or self.read_epoch != self.epoch:
            return None
        return max(self.top, self.read_top)

    def activate(self, session: Session, position: int) -> Held:
        """The subscribe reply (position `position`) is about to be written: returns the held
        publications after `position`, which the reply must carry, and starts live delivery."""
        held = self.joining.pop(session, [])
        after = [(offset, push) for offset, push in held if offset > position]
        upto = max(position, self.top)
        if upto > self.top or self._pending:
            self.skipping[session] = upto
        else:
            self.live[session] = session.transport
        return after

    def remove(self, session: Session) -> None:
        self.live.pop(session, None)
        self.skipping.pop(session, None)
        self.joining.pop(session, None)
        session.feeds.pop(self.channel, None)
        if not self:
            self._on_empty(self)

    def close(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None

    def resync(self, reason: str) -> None:
        """Every subscriber may have missed publications: tell each SDK to subscribe again, which
        recovers from its own position (or reloads the snapshot when history cannot cover it)."""
        push = unsubscribe_push(self.channel, UNSUBSCRIBE_INSUFFICIENT_STATE, reason)
        subscribed = [*self.live, *self.skipping]
        self._pending.clear()
        self._pending_keys.clear()
        for session in list(self.joining):
            self.remove(session)  # its subscribe notices and fails with a temporary error
        for session in subscribed:
            self.remove(session)
            session.send(push)

    def resume(self, top: int | None = None, epoch: str | None = None) -> None:
        """The link is back: `top`/`epoch` are the stream's position read after resubscribing."""
        if top is not None and epoch is not None:
            moved = (self.epoch and epoch != self.epoch) or top > self.top
            if self.gap or moved:
                self.resync("insufficient state")
            self.epoch = epoch
            self.top = max(self.top, top)
        self.paused = False
        self.gap = False
        if self._pending and self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    # --- publications ---

    def deliver(self, offset: int, epoch: str, coalesce_key: bytes, data: bytes) -> None:
        if epoch != self.epoch:
            if self.epoch:
                log.warning("%s: stream epoch changed, subscribers resynchronise", self.channel)
                self.epoch = epoch
                self.top = offset
                self.resync("insufficient state")
                return
            self.epoch = epoch
        elif offset <= self.top:
            return  # already delivered
        if self.paused and self.top and offset != self.top + 1:
            self.gap = True
        self.top = offset
        push = publication_push(self.channel, data, offset)
        overflowing = []
        for session, held in self.joining.items():
            if len(held) >= self.max_held:
                overflowing.append(session)
            else:
                held.append((offset, push))
        for session in overflowing:
            session.disconnect(INSUFFICIENT_STATE)  # it reconnects and recovers from history
        if coalesce_key:
            previous = self._pending_keys.get(coalesce_key)
            if previous is not None:
                self._pending[previous] = None
            self._pending_keys[coalesce_key] = len(self._pending)
        self._pending.append((offset, push))
        if self._flush_at is None and not self.paused:
            self._flush_at = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    def flush(self) -> None:
        started = time.perf_counter()
        self._flush_at = None
        items = [item for item in self._pending if item is not None]
        self._pending.clear()
        self._pending_keys.clear()
        if not items:
            return
        frame = text_frame(b"\n".join(push for _, push in items))
        slow: list[Session] = []
        gone: list[Session] = []
        for session, transport in self.live.items():
            if transport.get_write_buffer_size() > session.outbox_bytes:
                slow.append(session)
            else:
                try:
                    transport.write(frame)
                except RuntimeError:  # the client closed; its handler has not noticed yet
                    gone.append(session)
        written = len(self.live) - len(slow) - len(gone)
        SENT.add(written, written * len(frame))
        for session in gone:
            session.peer_closed()
        if self.skipping:
            for session, upto in list(self.skipping.items()):
                wanted = [push for offset, push in items if offset > upto]
                if wanted:
                    session.send(*wanted)
                    written += 1
                if self.top >= upto and session in self.skipping:
                    del self.skipping[session]
                    self.live[session] = session.transport
        for session in slow:
            session.write_frame(frame)  # over the limit: disconnects it as slow
        self.delivered += written * len(items)
        HUB_METRICS.flush.observe(time.perf_counter() - started)
