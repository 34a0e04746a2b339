"""Viewers built on the real Centrifugo SDKs: PyPI `centrifuge-python` in-process, and the npm
`centrifuge` package run by Node (tests/js/sdk_viewer.mjs). Both report what the SDK emits."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectingContext,
    DisconnectedContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionErrorContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

JS_DIR = Path(__file__).resolve().parents[1] / "js"


class Events(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.queue.put_nowait(
            {
                "event": "subscribed",
                "recovered": ctx.recovered,
                "wasRecovering": ctx.was_recovering,
                "data": ctx.data,
            }
        )

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.queue.put_nowait(
            {"event": "publication", "data": ctx.pub.data, "offset": ctx.pub.offset}
        )

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.queue.put_nowait({"event": "unsubscribed", "code": ctx.code})

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        code = getattr(ctx.error, "code", None)
        self.queue.put_nowait({"event": "subscription_error", "code": code})


class ClientEvents(ClientEventHandler):
    """The connection's state changes, into the same queue as the subscription's events."""

    def __init__(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.queue = queue

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.queue.put_nowait({"event": "connecting", "code": ctx.code})

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.queue.put_nowait({"event": "disconnected", "code": ctx.code})


class PythonViewer:
    def __init__(
        self,
        url: str,
        channel: str,
        token: str = "",
        get_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.events = Events()
        self.client = Client(
            url,
            events=ClientEvents(self.events.queue),
            token=token,
            get_token=get_token,
            min_reconnect_delay=0.1,
            max_reconnect_delay=1.0,
        )
        self.sub = self.client.new_subscription(channel, self.events)

    async def start(self) -> None:
        await self.client.connect()
        await self.sub.subscribe()

    async def next(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        return await _next(self.events.queue.get, event, timeout)

    async def disconnect(self) -> None:
        await self.client.disconnect()

    async def connect(self) -> None:
        await self.client.connect()


class NodeViewer:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(
        cls, url: str, channel: str, token: str = "", *, get_token: bool = False
    ) -> NodeViewer:
        """With `get_token`, the SDK asks for new tokens (event `token_wanted`); answer with
        `give_token`."""
        node = shutil.which("node")
        assert node, "node is required"
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "sdk_viewer.mjs"),
            url,
            channel,
            token,
            "refresh" if get_token else "",
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout
        line = await self.process.stdout.readline()
        if not line:
            raise EOFError("the Node viewer exited")
        return json.loads(line)  # type: ignore[no-any-return]

    async def next(self, event: str, timeout: float = 10.0) -> dict[str, Any]:
        return await _next(self.read, event, timeout)

    async def tell(self, command: str) -> None:
        assert self.process.stdin
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def give_token(self, token: str) -> None:
        await self.tell(f"token {token}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def _next(read: Any, event: str, timeout: float) -> dict[str, Any]:
    """The next `event`, passing others (and latest-value viewer counts) by."""
    async with asyncio.timeout(timeout):
        while True:
            message = await read()
            if message["event"] != event:
                continue
            data = message.get("data")
            if isinstance(data, dict) and data.get("type") == "viewers.changed":
                continue
            return message  # type: ignore[no-any-return]


def node_available() -> bool:
    return shutil.which("node") is not None and (JS_DIR / "node_modules" / "centrifuge").is_dir()
