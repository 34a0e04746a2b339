"""Run the API, the hub and the worker, together (`serve`) or alone, with clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack

import msgspec
import uvicorn

import attribution
import live
import storefront
from core import webhooks
from core.db import migrate_url
from core.embedded import EmbeddedPostgres, EmbeddedValkey
from core.loops import run_periodically
from core.processes import (
    configure_logging,
    event_loop_runner,
    reuse_port_socket,
    run_processes,
)
from core.resources import Resources, open_resources
from core.settings import Settings
from core.webhooks import DELIVER_INTERVAL_S
from livesell.app import create_app

log = logging.getLogger("livesell")


@contextlib.contextmanager
def embedded_servers(settings: Settings, *, stop_on_exit: bool = True) -> Iterator[Settings]:
    """Start embedded PostgreSQL / Valkey for whichever URL is unset; yield resolved settings.

    With both URLs set nothing embedded starts. `stop_on_exit=False` leaves the servers running
    for other livesell processes sharing the data dir (`livesell api` next to `livesell hub`).
    """
    with ExitStack() as stack:
        database_url, redis_url = settings.database_url, settings.redis_url
        if database_url is None:
            pg = EmbeddedPostgres(settings.data_dir / "pg")
            database_url = pg.start()
            if stop_on_exit:
                stack.callback(pg.stop)
        if redis_url is None:
            valkey = EmbeddedValkey(settings.data_dir / "valkey")
            redis_url = valkey.start()
            if stop_on_exit:
                stack.callback(valkey.stop)
        yield msgspec.structs.replace(settings, database_url=database_url, redis_url=redis_url)


def announce_dev_mode(settings: Settings) -> None:
    """Say at start-up what dev mode means here: loudly when it is on while a listener is not
    on loopback (only an explicit LIVESELL_DEV=1 does that), and how to mint tokens when it is
    off."""
    if settings.dev and not settings.loopback_only:
        log.warning(
            "DEV MODE IS ON WHILE LISTENING ON %s, NOT A LOOPBACK ADDRESS (LIVESELL_DEV=1): "
            "anyone who reaches the API can mint any token, admin included "
            "(POST /api/dev/token), and the simulated payment provider marks orders paid. "
            "Unset LIVESELL_DEV on a server others can reach.",
            settings.host,
        )
    elif not settings.dev:
        log.info(
            "dev mode is off (listening on %s): POST /api/dev/token and the simulated payment "
            "provider are disabled. Mint tokens with: livesell token --sub alice --roles host",
            settings.host,
        )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_server(shop: storefront.Shop, *, port: int | None = None) -> uvicorn.Server:
    """The API's uvicorn server (not yet serving), on `port` or the configured one."""
    settings = shop.res.settings
    app = create_app(settings, shop.res, shop)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.api_port if port is None else port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=True,
    )
    return _Server(config)


async def _api(
    shop: storefront.Shop, stop: asyncio.Event, sockets: list[socket.socket] | None = None
) -> None:
    # the first flash sale after a start must not wait for PostgreSQL to plan its orders
    await storefront.rehearse_orders(shop.res)
    server = api_server(shop)
    serving = asyncio.create_task(server.serve(sockets=sockets))
    await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    server.should_exit = True
    await serving


# --- `livesell api --workers N` ---


async def _api_process(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listening = reuse_port_socket(settings.host, settings.api_port)
    async with (
        open_resources(settings, warm=True) as res,
        contextlib.aclosing(storefront.Shop(res)) as shop,  # the provider's connections
    ):
        await _api(shop, stop, [listening])


def _api_worker_main(settings: Settings) -> None:
    configure_logging(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        event_loop_runner()(_api_process(settings))


def run_api_workers(settings: Settings, n: int) -> int:
    """Run the API in `n` processes sharing its port (core.processes): one flash sale then uses
    every core. Migrations run once, here, before they start."""
    assert settings.database_url
    applied = asyncio.run(migrate_url(settings.database_url))
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    return run_processes(_api_worker_main, settings, n, "livesell-api")


async def _worker(shop: storefront.Shop, stop: asyncio.Event) -> None:
    loops = [asyncio.create_task(c) for c in storefront.worker_tasks(shop)]
    loops += [asyncio.create_task(c) for c in attribution.worker_tasks(shop.res)]
    loops.append(
        asyncio.create_task(
            run_periodically(
                "webhooks.deliver", lambda: webhooks.deliver_due(shop.res), DELIVER_INTERVAL_S
            )
        )
    )
    await stop.wait()
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


async def run(
    settings: Settings,
    *,
    api: bool,
    hub: bool,
    worker: bool,
    on_ready: Callable[[Resources], Awaitable[None]] | None = None,
) -> None:
    """Run the chosen parts in this process until SIGINT / SIGTERM."""
    assert settings.database_url and settings.redis_url
    if api or hub:
        announce_dev_mode(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    applied = await migrate_url(settings.database_url)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    async with (
        open_resources(settings, warm=True) as res,
        # the API and the worker of one process share the storefront's parts; on the way out
        # the payment provider's connections are let go
        contextlib.aclosing(storefront.Shop(res)) as shop,
    ):
        parts = []
        if api:
            parts.append(asyncio.create_task(_api(shop, stop), name="api"))
        if hub:
            parts.append(
                asyncio.create_task(
                    live.run_hub(res, host=settings.host, port=settings.hub_port, stop=stop),
                    name="hub",
                )
            )
        if worker:
            parts.append(asyncio.create_task(_worker(shop, stop), name="worker"))
        if on_ready is not None:
            await on_ready(res)
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*parts, stopping], return_when="FIRST_COMPLETED")
        for task in done:
            if task is not stopping and task.exception() is not None:
                log.error("%s stopped with an error", task.get_name(), exc_info=task.exception())
        stop.set()
        log.info("shutting down")
        await asyncio.gather(*parts, return_exceptions=True)
