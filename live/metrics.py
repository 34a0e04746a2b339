"""The hub's Prometheus metrics, in the process-wide registry (`core.metrics`), so the hub's
`GET /metrics` and, in `livesell serve`, the API's show them alike.

Counting stays off the fan-out's per-viewer loop: a flush tick adds its writes once
(`SENT.add(viewers, viewers * frame size)`), a single write adds one; disconnects and closes are
integer increments. Gauges (connections, subscriptions, channels) are not kept at all: they are
read from the running hubs when scraped.

    livesell_hub_connections                     gauge      open WebSocket connections
    livesell_hub_connections_opened_total        counter    WebSocket connections accepted
    livesell_hub_connections_closed_total{code}  counter    closed connections by close code
    livesell_hub_subscriptions{kind}             gauge      subscriptions by channel kind
    livesell_hub_channels{kind}                  gauge      channels with local subscribers
    livesell_hub_frames_sent_total               counter    text frames written to viewers
    livesell_hub_sent_bytes_total                counter    bytes of those frames
    livesell_hub_slow_disconnects_total          counter    viewers cut off as slow (3008)
    livesell_hub_expired_disconnects_total       counter    tokens run out unrefreshed (3005)
    livesell_hub_flush_seconds                   histogram  one channel's flush tick
    livesell_hub_quiet_collections_total         counter    full collections the hub made itself
    livesell_hub_quiet_collection_seconds_total  counter    the time those collections took
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.metrics import LoopHistogram
from live.errors import EXPIRED, SLOW

if TYPE_CHECKING:
    from live.hub import Hub
    from live.session import Session

# a tick writes one frame to every subscriber: microseconds for a few, milliseconds for thousands
FLUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
KINDS = ("room", "dashboard", "user", "chat")
# codes a client may send, labelled as themselves; any other code a client sends is "other" (the
# hub's own codes come from its source, a bounded set)
_PEER_CODES = {code: str(code) for code in range(1000, 1016)}
ABNORMAL = 1006  # closed without a close frame


def channel_kind(channel: str) -> str:
    """`room:42` → room, `dashboard#alice` → dashboard, `user#alice` → user, `chat:42` → chat."""
    for separator in (":", "#"):
        kind, sep, _ = channel.partition(separator)
        if sep and kind in KINDS:
            return kind
    return "other"


class Sent:
    """Frames and bytes written to viewers' transports, as two plain integers."""

    __slots__ = ("frames", "bytes")

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def add(self, frames: int, nbytes: int) -> None:
        self.frames += frames
        self.bytes += nbytes


class HubMetrics(Collector):
    """Counts of every hub of the process (one in production; tests run several), rendered when
    scraped, with gauges read from the hubs still running."""

    def __init__(self) -> None:
        self.hubs: weakref.WeakSet[Hub] = weakref.WeakSet()
        self.sent = Sent()
        self.opened = 0
        self.closed: Counter[str] = Counter()
        self.disconnects: Counter[int] = Counter()  # the hub's own close decisions, by code
        self.collections = 0  # `live.collector`'s, and the seconds they took
        self.collection_s = 0.0
        self.flush = LoopHistogram(
            "livesell_hub_flush_seconds",
            "one channel's flush tick: joining its queued pushes into a frame and writing it"
            " to every subscriber",
            FLUSH_BUCKETS,
            registry=None,
        )

    def watch(self, hub: Hub) -> None:
        self.hubs.add(hub)

    def connection_opened(self) -> None:
        self.opened += 1

    def collected(self, seconds: float) -> None:
        self.collections += 1
        self.collection_s += seconds

    def disconnected(self, code: int) -> None:
        self.disconnects[code] += 1

    def connection_closed(self, session: Session) -> None:
        """Count a finished connection under its close code: the hub's when the hub closed it,
        else the one the closing handshake carried (1009 for an oversized frame, the client's
        own 1000 or 1001...), 1006 when it ended without one."""
        if session.close_code is not None:
            label = str(session.close_code)
        else:
            protocol = session.protocol
            assert protocol is not None  # counted only once the WebSocket opened
            sent = protocol.close_sent
            code = sent.code if sent is not None else protocol.close_code
            label = _PEER_CODES.get(code or ABNORMAL, "other")
        self.closed[label] += 1

    def collect(self) -> Iterator[Metric]:
        hubs = list(self.hubs)
        subscriptions = dict.fromkeys(KINDS, 0)
        channels = dict.fromkeys(KINDS, 0)
        for hub in hubs:
            for feed in list(hub.feeds.values()):
                kind = channel_kind(feed.channel)
                subscriptions[kind] = subscriptions.get(kind, 0) + len(feed)
                channels[kind] = channels.get(kind, 0) + 1
        yield GaugeMetricFamily(
            "livesell_hub_connections",
            "open WebSocket connections",
            value=sum(len(hub.sessions) for hub in hubs),
        )
        yield CounterMetricFamily(
            "livesell_hub_connections_opened", "WebSocket connections accepted", value=self.opened
        )
        closed = CounterMetricFamily(
            "livesell_hub_connections_closed",
            "closed WebSocket connections by close code (the hub's when it closed them)",
            labels=["code"],
        )
        for label, count in sorted(self.closed.items()):
            closed.add_metric([label], count)
        yield closed
        by_kind = GaugeMetricFamily(
            "livesell_hub_subscriptions", "channel subscriptions by channel kind", labels=["kind"]
        )
        for kind, count in subscriptions.items():
            by_kind.add_metric([kind], count)
        yield by_kind
        feeds = GaugeMetricFamily(
            "livesell_hub_channels",
            "channels with subscribers on this node (one Redis pub/sub subscription each)",
            labels=["kind"],
        )
        for kind, count in channels.items():
            feeds.add_metric([kind], count)
        yield feeds
        yield CounterMetricFamily(
            "livesell_hub_frames_sent",
            "WebSocket text frames written to viewers (replies, pushes, pings)",
            value=self.sent.frames,
        )
        yield CounterMetricFamily(
            "livesell_hub_sent_bytes",
            "bytes of the text frames written to viewers, headers included",
            value=self.sent.bytes,
        )
        yield CounterMetricFamily(
            "livesell_hub_slow_disconnects",
            f"viewers cut off as too slow to read ({SLOW.code})",
            value=self.disconnects[SLOW.code],
        )
        yield CounterMetricFamily(
            "livesell_hub_expired_disconnects",
            f"sessions closed because their token expired unrefreshed ({EXPIRED.code})",
            value=self.disconnects[EXPIRED.code],
        )
        yield CounterMetricFamily(
            "livesell_hub_quiet_collections",
            "full garbage collections the hub made itself: in a quiet moment once enough"
            " connections came or went, or after holding them back while connections kept opening",
            value=self.collections,
        )
        yield CounterMetricFamily(
            "livesell_hub_quiet_collection_seconds",
            "seconds those collections held the event loop",
            value=self.collection_s,
        )
        yield from self.flush.collect()


HUB_METRICS = HubMetrics()
REGISTRY.register(HUB_METRICS)
SENT = HUB_METRICS.sent
