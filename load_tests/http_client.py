"""The load tests' one HTTP/1.1 client, on raw asyncio streams and protocols, for loopback servers.

A general-purpose client's bookkeeping per request (httpx scans its whole pool for each queued
request) would cost the load generator more CPU than the API spends answering, and a benchmark
would time its own queue. Two shapes:

- `Client`: keep-alive requests awaited one at a time per connection, at most `max_connections`
  open (set-up calls, purchases, clicks, health and /metrics);
- `fire`: a fixed list of prepared requests pushed through N keep-alive connections by an
  `asyncio.Protocol`: no coroutine, future or buffer copy per request, so the client leaves as
  much as it can of the CPU it shares with the servers (the flash sale).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec

HOST = "127.0.0.1"


def request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request to `HOST`, ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; the first value of each
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def raise_for_status(self) -> Response:
        if self.status >= 400:
            raise RuntimeError(f"HTTP {self.status}: {self.body[:300]!r}")
        return self


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await reader.readuntil(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head[:-4].decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    length = int(headers.get("content-length", 0))
    body = await reader.readexactly(length) if length else b""
    return Response(int(head[9:12]), headers, body)


class Client:
    """Keep-alive requests to `HOST:port`, at most `max_connections` at once."""

    def __init__(self, port: int, max_connections: int = 8) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(max_connections)
        self.opened: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.opened:
            writer.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Response:
        headers = dict(headers or {})
        if json is not None:
            body = msgspec.json.encode(json)
            headers["Content-Type"] = "application/json"
        raw = request(method, path, headers, body)
        async with self.slots:
            if self.idle:
                try:
                    return await self._exchange(*self.idle.pop(), raw)
                except (OSError, asyncio.IncompleteReadError):
                    pass  # the server closed the idle connection before reading: a new one
            reader, writer = await asyncio.open_connection(HOST, self.port)
            self.opened.append(writer)
            return await self._exchange(reader, writer, raw)

    async def get(self, path: str, **options: Any) -> Response:
        return await self.request("GET", path, **options)

    async def post(self, path: str, **options: Any) -> Response:
        return await self.request("POST", path, **options)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
    ) -> Response:
        writer.write(raw)
        response = await read_response(reader)
        self.idle.append((reader, writer))
        return response


async def wait_healthy(
    port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60, path: str = "/healthz"
) -> None:
    """Wait until `GET path` answers 200 (`path=""`: until the port accepts connections)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            if not path:
                _, writer = await asyncio.open_connection(HOST, port)
                writer.close()
                return
            async with Client(port, 1) as client:
                if (await client.get(path)).status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} not ready on port {port} in {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def serving(
    argv: Sequence[str], env: dict[str, str], port: int, path: str = "/healthz"
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A server subprocess, yielded once healthy (see `wait_healthy`), terminated after."""
    proc = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL)
    try:
        await wait_healthy(port, proc, path=path)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


class Load:
    """The requests `fire` sends, and what came back."""

    def __init__(self, requests: list[bytes], deadline_s: float, label: str) -> None:
        self.pending = list(reversed(requests))
        self.total = len(requests)
        self.step = max(1, self.total // 10)
        self.latencies: list[float] = []  # seconds
        self.statuses: Counter[int] = Counter()  # 0: no answer
        # the 201 answers: latency, and when each came (seconds into the run)
        self.created: list[tuple[float, float]] = []
        self.label = label
        self.started = time.perf_counter()
        self.stop_at = self.started + deadline_s
        self.seconds = 0.0

    def next_request(self) -> bytes | None:
        if not self.pending or time.perf_counter() >= self.stop_at:
            return None
        return self.pending.pop()

    def answered(self, status: int, seconds: float) -> None:
        self.latencies.append(seconds)
        self.statuses[status] += 1
        if status == 201:
            self.created.append((seconds, time.perf_counter() - self.started))
        done = len(self.latencies)
        if done % self.step == 0:
            rate = done / (time.perf_counter() - self.started)
            print(f"  {self.label}: {done}/{self.total} requests, {rate:,.0f}/s", flush=True)


class _Connection(asyncio.Protocol):
    """One keep-alive connection of `fire`: sends its next request when the previous answer is
    complete."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at: float | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        raw = self.load.next_request()
        if raw is None:
            self.sent_at = None
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while self.sent_at is not None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            self.load.answered(int(head[9:12]), time.perf_counter() - self.sent_at)
            self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sent_at is not None:
            self.load.statuses[0] += 1  # the request in flight got no answer
        if not self.lost.done():
            self.lost.set_result(None)


async def fire(
    port: int, requests: list[bytes], *, concurrency: int, deadline_s: float, label: str
) -> Load:
    """Send every request over `concurrency` keep-alive connections. A connection the server
    closes is replaced while requests remain."""
    load = Load(requests, deadline_s, label)
    loop = asyncio.get_running_loop()

    async def connection() -> None:
        while load.pending and time.perf_counter() < load.stop_at:
            _, conn = await loop.create_connection(lambda: _Connection(load), HOST, port)
            await conn.lost

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - load.started
    return load
