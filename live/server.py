"""The hub's WebSocket server (`websockets` asyncio), and `--workers N` processes sharing its port.

`websockets` does the handshake, reads and validates client frames (over `hub_max_frame_bytes`
it closes with 1009), and runs the closing handshake; everything the hub sends is framed by
`live.session`. permessage-deflate stays off so one tick's frame is the same bytes for everyone.
A plain `GET /metrics` on the hub's port is answered before any upgrade, with the process's
Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from core.metrics import CONTENT_TYPE, exposition
from core.processes import configure_logging, event_loop_runner, run_processes
from core.ratelimit import Limit, address_subject
from core.resources import Resources, open_resources
from core.settings import Settings
from live.errors import Disconnect
from live.hub import Hub
from live.metrics import HUB_METRICS
from live.session import Session

log = logging.getLogger("livesell.hub")

PATH = "/connection/websocket"
METRICS_PATH = "/metrics"
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
STALE = Disconnect(3502, "stale")

# the library logs every connection at INFO: too chatty for tens of thousands of viewers
_websockets_log = logging.getLogger("livesell.hub.websockets")
_websockets_log.setLevel(logging.WARNING)


def _handshake_check(
    res: Resources,
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    """Answer `GET /metrics`; refuse handshakes on other paths (404) and connection floods from
    one address (429)."""
    limit = Limit("hub-connect", res.settings.hub_connect_rate_per_ip)
    limiter = res.limiter

    async def check(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == METRICS_PATH:
            return _metrics_response(connection)
        if path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"the hub serves {PATH}\n")
        peer = connection.remote_address[0] if connection.remote_address else None
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and address_subject(peer) is None:
            # a local reverse proxy in front of the hub names the real client
            peer = forwarded.rsplit(",", 1)[-1].strip()
        refused = await limiter.hit((limit, address_subject(peer)))
        if refused is not None:
            response = connection.respond(
                HTTPStatus.TOO_MANY_REQUESTS, "too many connections from this address\n"
            )
            response.headers["Retry-After"] = str(refused.retry_after_s)
            return response
        return None

    return check


def _metrics_response(connection: ServerConnection) -> Response:
    response = connection.respond(HTTPStatus.OK, "")
    response.body = exposition()
    del response.headers["Content-Type"], response.headers["Content-Length"]
    response.headers["Content-Type"] = CONTENT_TYPE
    response.headers["Content-Length"] = str(len(response.body))
    return response


async def _serve_connection(hub: Hub, ws: ServerConnection) -> None:
    session = Session(ws, hub.settings.hub_outbox_bytes)
    HUB_METRICS.connection_opened()
    hub.attach(session)
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                first = await ws.recv()
        except TimeoutError:
            session.disconnect(STALE)  # never said connect
            return
        await hub.handle_frame(session, first)
        while not session.closing:
            frame = await ws.recv()
            await hub.handle_frame(session, frame)
    except ConnectionClosed:
        pass
    finally:
        hub.detach(session)
        try:
            if session.closing:
                with contextlib.suppress(Exception):
                    await ws.wait_closed()
        finally:
            HUB_METRICS.connection_closed(session, ws)


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
    settings = res.settings
    origins = [*settings.hub_origins, None] if settings.hub_origins else None
    hub = Hub(res)
    async with hub.running():
        server = await serve(
            lambda ws: _serve_connection(hub, ws),
            host,
            port,
            compression=None,
            origins=origins,  # type: ignore[arg-type]
            process_request=_handshake_check(res),
            max_size=settings.hub_max_frame_bytes,
            max_queue=4,
            ping_interval=None,  # the protocol's own ping `{}` keeps connections alive
            close_timeout=CLOSE_TIMEOUT_S,
            write_limit=settings.hub_outbox_bytes,
            reuse_port=reuse_port,
            backlog=4096,
            logger=_websockets_log,
        )
        log.info("hub listening on ws://%s:%s%s (node %s)", host, port, PATH, hub.node_id)
        if on_listening is not None:
            maybe = on_listening(hub)
            if maybe is not None:
                await maybe
        try:
            await stop.wait()
        finally:
            server.close(close_connections=False)
            hub.shutdown()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S + 1):
                    await server.wait_closed()
            except TimeoutError:
                log.warning("some hub connections did not close in time")


# --- `livesell hub --workers N` ---


async def _serve_process(settings: Settings, reuse_port: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_resources(settings, pool_max=10) as res:
        await run_hub(
            res, host=settings.host, port=settings.hub_port, stop=stop, reuse_port=reuse_port
        )


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
