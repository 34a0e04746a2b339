"""The hub's WebSocket server, and `--workers N` processes sharing its port.

Each connection is a `live.session.Session` (an `asyncio.Protocol` on the event loop's own TCP
transport): it answers the opening handshake (`live.handshake`), then drives the `websockets`
library's sans-I/O `ServerProtocol`, which reads and validates client frames (over
`hub_max_frame_bytes` it closes with 1009) and runs the closing handshake; everything the hub
sends is framed by `live.session`.
permessage-deflate stays off so one tick's frame is the same bytes for everyone. A plain
`GET /metrics` on the hub's port is answered before any upgrade, with the process's Prometheus
metrics.

The server keeps no task per connection: a session that has not said connect within
`CONNECT_TIMEOUT_S` (or not finished its opening handshake) is closed by the hub's heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from websockets.protocol import State
from websockets.server import ServerProtocol

from core.metrics import CONTENT_TYPE, exposition
from core.processes import configure_logging, event_loop_runner, run_processes
from core.ratelimit import Limit, address_subject
from core.resources import Resources, open_resources
from core.settings import Settings
from live.handshake import Request, response
from live.hub import Hub
from live.session import Session

log = logging.getLogger("livesell.hub")

PATH = "/connection/websocket"
METRICS_PATH = "/metrics"
_PATH, _METRICS_PATH = PATH.encode(), METRICS_PATH.encode()
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0

# the library logs every connection at INFO: too chatty for tens of thousands of viewers
_websockets_log = logging.getLogger("livesell.hub.websockets")
_websockets_log.setLevel(logging.WARNING)


class Listener:
    """What every connection of one server shares: the hub, the protocol's limits, and the
    check of each handshake request."""

    def __init__(self, hub: Hub, res: Resources) -> None:
        settings = res.settings
        self.hub = hub
        # the Origin headers allowed (None: none sent, as by native apps); None: any
        self.origins: frozenset[str | None] | None = (
            frozenset([*settings.hub_origins, None]) if settings.hub_origins else None
        )
        self.max_size = settings.hub_max_frame_bytes
        self.outbox_bytes = settings.hub_outbox_bytes
        self.close_timeout_s = CLOSE_TIMEOUT_S
        self.logger = _websockets_log
        self.serving = True
        self._limit = Limit("hub-connect", settings.hub_connect_rate_per_ip)
        self._limiter = res.limiter

    def new_protocol(self) -> ServerProtocol:
        """The WebSocket protocol of a connection whose opening handshake succeeded."""
        return ServerProtocol(state=State.OPEN, max_size=self.max_size, logger=self.logger)

    def session(self) -> Session:
        return Session(self)

    def check(self, session: Session, request: Request) -> bytes | None | Awaitable[bytes | None]:
        """Answer `GET /metrics`; refuse handshakes on other paths (404) and connection floods
        from one address (429, counted in Redis: the only case that waits). None: go ahead."""
        path = request.path.partition(b"?")[0]
        if path == _METRICS_PATH:
            return response(HTTPStatus.OK, exposition(), content_type=CONTENT_TYPE)
        if path != _PATH:
            return response(HTTPStatus.NOT_FOUND, f"the hub serves {PATH}")
        peername = session.transport.get_extra_info("peername")
        peer = peername[0] if peername else None
        forwarded = request.header(b"x-forwarded-for")
        if forwarded and address_subject(peer) is None:
            # a local reverse proxy in front of the hub names the real client
            peer = forwarded.rsplit(",", 1)[-1].strip()
        subject = _address_subject(peer)
        if subject is None or self._limit.hits <= 0:
            return None  # loopback and unknown peers are not counted
        return self._counted(session, subject)

    async def _counted(self, session: Session, subject: str) -> bytes | None:
        refused = await self._limiter.hit((self._limit, subject))
        if refused is None:
            return None
        return response(
            HTTPStatus.TOO_MANY_REQUESTS,
            "too many connections from this address",
            ("Retry-After", str(refused.retry_after_s)),
        )


@functools.lru_cache(maxsize=4096)
def _address_subject(peer: str | None) -> str | None:
    """`address_subject`, remembered: a join storm comes from few addresses."""
    return address_subject(peer)


async def run_hub(
    res: Resources,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    reuse_port: bool = False,
    on_listening: Callable[[Hub], Awaitable[None] | None] | None = None,
) -> None:
    """Serve the hub on `host:port` until `stop` is set, then close every connection with 3001
    (SDKs reconnect, to another node if there is one)."""
    hub = Hub(res, connect_timeout_s=CONNECT_TIMEOUT_S)
    listener = Listener(hub, res)
    loop = asyncio.get_running_loop()
    async with hub.running():
        server = await loop.create_server(
            listener.session, host, port, reuse_port=reuse_port, backlog=4096
        )
        log.info("hub listening on ws://%s:%s%s (node %s)", host, port, PATH, hub.node_id)
        if on_listening is not None:
            maybe = on_listening(hub)
            if maybe is not None:
                await maybe
        try:
            await stop.wait()
        finally:
            listener.serving = False
            server.close()
            hub.shutdown()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S + 1):
                    await hub.all_closed()
            except TimeoutError:
                log.warning("some hub connections did not close in time")
                hub.abort_all()


# --- `livesell hub --workers N` ---


async def _serve_process(settings: Settings, reuse_port: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_resources(settings, pool_max=10) as res:
        await run_hub(
            res,
            host=settings.host,
            port=settings.hub_port,
            stop=stop,
            reuse_port=reuse_port,
            on_listening=_freeze_startup_objects,
        )


def _freeze_startup_objects(_: Hub) -> None:
    """What starting the process made (modules, pools, scripts, the hub itself) lives as long
    as the process: move it out of the collector's generations (`gc.freeze`), so a full
    collection during a join storm walks the viewers' objects, not the whole program."""
    gc.freeze()


def _worker_main(settings: Settings, reuse_port: bool = True) -> None:
    configure_logging(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        event_loop_runner()(_serve_process(settings, reuse_port))


def run_hub_workers(settings: Settings, n: int) -> int:
    """Run the hub in `n` processes bound to one port with SO_REUSEPORT (the kernel spreads
    connections over them), each with its own event loop and Redis connections. SIGTERM or
    SIGINT stops them all; returns the worst exit code."""
    from core.db import migrate_url

    assert settings.database_url
    asyncio.run(migrate_url(settings.database_url))
    if n <= 1:
        _worker_main(settings, reuse_port=False)
        return 0
    return run_processes(_worker_main, settings, n, "livesell-hub")
