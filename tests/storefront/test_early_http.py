"""Provable buy refusals answered at the HTTP protocol layer (core.early_http), checked against
real uvicorn servers on loopback ports: the API server as `livesell api` runs it, and the same
server with the early path off (uvicorn's own protocol), so the ordinary ASGI path answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY

from core.early_http import EarlyHttpProtocol
from core.embedded import free_port
from core.resources import Resources
from livesell.runner import api_server
from storefront import api, billing
from storefront.checkout import drain_background
from tests.storefront.conftest import Auth, Buy, StartDrop, stock_truth

HOST = "127.0.0.1"


@dataclass
class Reply:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)

    def without_date(self) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        return self.status_line, [h for h in self.headers if h[0] != b"date"], self.body


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 100 "):
            break  # an interim 100 Continue precedes the answer
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    length = int(next((v for n, v in headers if n == b"content-length"), b"0"))
    return Reply(lines[0], headers, await reader.readexactly(length))


@dataclass
class Served:
    server: uvicorn.Server
    port: int

    @asynccontextmanager
    async def connection(
        self,
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        reader, writer = await asyncio.open_connection(HOST, self.port)
        try:
            yield reader, writer
        finally:
            writer.close()

    async def exchange(self, data: bytes, replies: int = 1) -> list[Reply]:
        """Write `data` at once on a new connection; read `replies` answers."""
        async with self.connection() as (reader, writer):
            writer.write(data)
            return [await read_reply(reader) for _ in range(replies)]


@asynccontextmanager
async def serving(res: Resources, *, early: bool) -> AsyncIterator[Served]:
    port = free_port()
    server = api_server(res, port=port, early=early)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield Served(server, port)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def early(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    memory = billing.gate_of(resources).recent
    memory.clear()  # drop ids restart with every test
    # a refusal stays provable through each test, however slow the machine (nothing here
    # returns stock behind the memory's back)
    monkeypatch.setattr(memory, "memory_s", 30.0)
    async with serving(resources, early=True) as served:
        yield served


@pytest.fixture
async def plain(resources: Resources) -> AsyncIterator[Served]:
    async with serving(resources, early=False) as served:
        yield served


def attempt(
    drop_id: str,
    token_headers: dict[str, str],
    *,
    key: str | None = "k-1",
    body: bytes = b'{"quantity":1}',
    extra: tuple[str, ...] = (),
    length: bool = True,
) -> bytes:
    lines = [f"POST /api/drops/{drop_id}/buy HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name}: {value}" for name, value in token_headers.items()]
    lines.append("Content-Type: application/json")
    if key is not None:
        lines.append(f"Idempotency-Key: {key}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def early_answers() -> float:
    return sample("livesell_http_early_answers_total", route=api.BUY_ROUTE)


def buy_requests(status: str) -> tuple[float, float]:
    """The HTTP series of the buy route: requests answered with `status`, latencies observed."""
    return (
        sample("livesell_http_requests_total", method="POST", route=api.BUY_ROUTE, status=status),
        sample("livesell_http_request_seconds_count", method="POST", route=api.BUY_ROUTE),
    )


async def sold_out(start_drop: StartDrop, buy: Buy) -> str:
    """A live drop whose only unit is held by `winner` (key `won`); the gate refused a loser."""
    drop = await start_drop(quantity=1, per_buyer_limit=1)
    assert (await buy(drop["id"], "winner", key="won")).status_code == 201
    assert (await buy(drop["id"], "first-loser")).status_code == 409
    drop_id: str = drop["id"]
    return drop_id


@pytest.mark.parametrize("reason", ["sold_out", "limit_reached", "drop_not_active"])
async def test_an_early_refusal_is_the_routes_answer_byte_for_byte(
    early: Served,
    plain: Served,
    resources: Resources,
    start_drop: StartDrop,
    buy: Buy,
    auth: Auth,
    client: httpx.AsyncClient,
    reason: str,
) -> None:
    drop = await start_drop(quantity=2, per_buyer_limit=1)
    assert (await buy(drop["id"], "winner", key="won")).status_code == 201
    buyer = "winner" if reason == "limit_reached" else "dave"
    if reason != "drop_not_active":
        assert (await buy(drop["id"], "winner-2")).status_code == 201
    else:
        closed = await client.post(f"/api/drops/{drop['id']}/close", headers=auth("hana", "host"))
        assert closed.status_code == 200, closed.text
    request = attempt(drop["id"], auth(buyer, "viewer"))
    memory = billing.gate_of(resources).recent

    # the route answers on the ordinary path: nothing remembered, the gate in Redis decides
    memory.clear()
    counted = early_answers()
    (by_route,) = await plain.exchange(request)
    assert early_answers() == counted
    if reason == "limit_reached":  # not a refusal the gate learns from: a loser's is
        (loser,) = await plain.exchange(attempt(drop["id"], auth("dave", "viewer")))
        assert loser.status == 409
    assert memory.refusal(int(drop["id"]), buyer, 1, "") is not None, "the refusal is learnt"

    (by_protocol,) = await early.exchange(request)
    assert early_answers() == counted + 1, "the protocol layer answered"
    assert by_protocol.without_date() == by_route.without_date()
    assert by_route.status in (409, 429) and b'"code":"' + reason.encode() in by_route.body
    assert by_protocol.header(b"date") and by_protocol.header(b"server") == b"uvicorn"
    assert by_protocol.header(b"connection") is None  # kept alive


@pytest.mark.parametrize("pieces", [1, 2, 7])
async def test_a_request_is_answered_early_however_it_arrives(
    early: Served, start_drop: StartDrop, buy: Buy, auth: Auth, pieces: int
) -> None:
    """Read whole in one piece, a request is answered without uvicorn's parser ever building
    a request cycle; arriving in pieces, it is held for its body and answered the same."""
    drop_id = await sold_out(start_drop, buy)
    request = attempt(drop_id, auth("fay", "viewer"))
    (reference,) = await early.exchange(request)
    counted = early_answers()
    async with early.connection() as (reader, writer):
        step = -(-len(request) // pieces)
        for at in range(0, len(request), step):
            writer.write(request[at : at + step])
            await writer.drain()
            await asyncio.sleep(0.02)
        reply = await read_reply(reader)
        (served,) = early.server.server_state.connections
        assert isinstance(served, EarlyHttpProtocol)
        assert (served.cycle is None) == (pieces == 1)
    assert early_answers() == counted + 1
    assert reply.without_date() == reference.without_date() and reply.status == 409


@pytest.mark.parametrize(
    "defect",
    [
        b"Content-Length : 14",  # whitespace before the colon
        b"X-Note: a\x01b",  # a control character in a value
        b"X-Note: a\r\n folded",  # obs-fold
        b"Content-Length: 14\r\nContent-Length: 14",  # a repeated length
        b"Transfer-Encoding: chunked",  # with a Content-Length
    ],
)
async def test_what_httptools_refuses_is_never_answered_early(
    early: Served, plain: Served, start_drop: StartDrop, buy: Buy, auth: Auth, defect: bytes
) -> None:
    drop_id = await sold_out(start_drop, buy)
    request = attempt(drop_id, auth("gil", "viewer"))
    if defect.startswith(b"Content-Length"):
        head, _, body = request.partition(b"\r\n\r\n")
        head = b"\r\n".join(line for line in head.split(b"\r\n") if b"Content-Length" not in line)
        request = head + b"\r\n" + defect + b"\r\n\r\n" + body
    else:
        request = request.replace(b"\r\n\r\n", b"\r\n" + defect + b"\r\n\r\n", 1)
    counted = early_answers()
    (by_route,) = await plain.exchange(request)
    (reply,) = await early.exchange(request)
    assert early_answers() == counted
    assert reply.status == by_route.status and reply.body == by_route.body


async def test_pipelined_requests_get_their_answers_in_order(
    early: Served, start_drop: StartDrop, buy: Buy, auth: Auth
) -> None:
    drop_id = await sold_out(start_drop, buy)
    viewer = auth("erin", "viewer")
    refused = attempt(drop_id, viewer)
    over_limit = attempt(drop_id, viewer, body=b'{"quantity":2}')
    counted = early_answers()

    # two attempts in one TCP write: each answered early, in order
    first, second = await early.exchange(refused + over_limit, 2)
    assert (first.status, second.status) == (409, 429)
    assert b"sold_out" in first.body and b"limit_reached" in second.body
    assert early_answers() == counted + 2

    # an attempt behind a request in flight waits its turn on the ordinary path
    view, after = await early.exchange(get(f"/api/drops/{drop_id}") + refused, 2)
    assert view.status == 200 and view.body.startswith(b"{")
    assert after.status == 409 and after.body == first.body
    assert early_answers() == counted + 2

    # and an early answer leaves the connection ready for the next one, kept alive
    answers = await early.exchange(refused + get(f"/api/drops/{drop_id}") + refused, 3)
    assert [a.status for a in answers] == [409, 200, 409]
    assert early_answers() == counted + 3


async def test_connection_close_is_honoured(
    early: Served, plain: Served, start_drop: StartDrop, buy: Buy, auth: Auth
) -> None:
    drop_id = await sold_out(start_drop, buy)
    request = attempt(drop_id, auth("gus", "viewer"), extra=("Connection: close",))
    counted = early_answers()
    replies = []
    for served in (early, plain):
        async with served.connection() as (reader, writer):
            writer.write(request)
            replies.append(await read_reply(reader))
            assert await asyncio.wait_for(reader.read(), 2) == b"", "the server closed it"
    assert early_answers() == counted + 1
    by_protocol, by_asgi = replies
    assert by_protocol.status == 409 and by_protocol.header(b"connection") == b"close"
    assert by_protocol.without_date() == by_asgi.without_date()


async def test_keep_alive_timeout_and_request_count_after_an_early_answer(
    early: Served, start_drop: StartDrop, buy: Buy, auth: Auth
) -> None:
    drop_id = await sold_out(start_drop, buy)
    early.server.config.timeout_keep_alive = 0.3  # new connections take it
    served = early.server.server_state.total_requests
    async with early.connection() as (reader, writer):
        for n in range(3):
            # each answer restarts the idle time: past the timeout since the first, the
            # connection is still open for the third
            writer.write(attempt(drop_id, auth("gus", "viewer"), key=f"k-{n}"))
            assert (await read_reply(reader)).status == 409
            await asyncio.sleep(0.2)
        # idle after the answer: closed by the keep-alive timeout, as after any response
        assert await asyncio.wait_for(reader.read(), 3) == b""
    assert early.server.server_state.total_requests == served + 3


@pytest.mark.parametrize(
    "shape",
    ["oversized", "no content-length", "chunked", "expect 100-continue", "http/1.0", "query"],
)
async def test_unusual_requests_fall_through_to_the_application(
    early: Served, start_drop: StartDrop, buy: Buy, auth: Auth, shape: str
) -> None:
    drop_id = await sold_out(start_drop, buy)
    viewer = auth("hal", "viewer")
    (reference,) = await early.exchange(attempt(drop_id, viewer))
    assert reference.status == 409
    body = b'{"quantity":1}'
    if shape == "oversized":
        request = attempt(drop_id, viewer, body=body + b" " * 1024)
    elif shape == "no content-length":
        request = attempt(drop_id, viewer, body=b"", length=False)
    elif shape == "chunked":
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        request = attempt(
            drop_id, viewer, body=chunked, length=False, extra=("Transfer-Encoding: chunked",)
        )
    elif shape == "expect 100-continue":
        request = attempt(drop_id, viewer, extra=("Expect: 100-continue",))
    elif shape == "http/1.0":
        request = attempt(drop_id, viewer).replace(b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1)
    else:
        request = attempt(drop_id, viewer).replace(b"/buy HTTP", b"/buy?x=1 HTTP", 1)
    counted = early_answers()
    (reply,) = await early.exchange(request)
    assert early_answers() == counted, "left to the application"
    # which answers it the same way: the request reached it whole
    assert reply.status == 409 and reply.body == reference.body


async def test_requests_the_route_answers_otherwise_fall_through(
    early: Served, start_drop: StartDrop, buy: Buy, auth: Auth
) -> None:
    drop_id = await sold_out(start_drop, buy)
    counted = early_answers()
    cases = [
        (attempt(drop_id, {"Authorization": "Bearer x.y.z"}), 401, b"unauthorized"),
        (attempt(drop_id, {}), 401, b"unauthorized"),
        (attempt(drop_id, auth("ida", "viewer"), key=None), 400, b"idempotency_key_required"),
        (attempt(drop_id, auth("ida", "host")), 403, b"forbidden"),
        (attempt(drop_id, auth("ida", "viewer"), body=b'{"quantity":0}'), 422, b"unprocessable"),
        (attempt(drop_id, auth("ida", "viewer"), body=b"{nope"), 400, b"bad_request"),
    ]
    for request, status, code in cases:
        (reply,) = await early.exchange(request)
        assert reply.status == status and b'"code":"' + code + b'"' in reply.body, reply
    assert early_answers() == counted

    # a replayed Idempotency-Key is the gate's to answer: the stored order, not a refusal
    (replay,) = await early.exchange(attempt(drop_id, auth("winner", "viewer"), key="won"))
    assert replay.status == 201 and replay.header(b"idempotent-replayed") == b"true"
    assert early_answers() == counted


async def test_early_answers_are_counted_in_the_http_metrics(
    early: Served, plain: Served, start_drop: StartDrop, buy: Buy, auth: Auth
) -> None:
    drop_id = await sold_out(start_drop, buy)
    request = attempt(drop_id, auth("jo", "viewer"))
    for served, early_delta in ((early, 1), (plain, 0)):
        counted, (requests, observed) = early_answers(), buy_requests("409")
        (reply,) = await served.exchange(request)
        assert reply.status == 409
        assert early_answers() == counted + early_delta
        # the same series, under the route template, whichever path answered
        assert buy_requests("409") == (requests + 1, observed + 1)
    (scraped,) = await early.exchange(get("/metrics"))
    line = (
        f'livesell_http_requests_total{{method="POST",route="{api.BUY_ROUTE}",status="409"}} '
    ).encode()
    assert line in scraped.body
    assert f'livesell_http_early_answers_total{{route="{api.BUY_ROUTE}"}}'.encode() in scraped.body


async def test_the_hook_takes_effect_and_its_switch_is_honest(
    early: Served, start_drop: StartDrop, buy: Buy, auth: Auth
) -> None:
    """Fails loudly when uvicorn stops using the protocol class (an upgrade that changed the
    hook or the internals it relies on): the early counter would not move."""
    drop_id = await sold_out(start_drop, buy)
    request = attempt(drop_id, auth("kai", "viewer"))
    counted = early_answers()
    replies = await early.exchange(request * 5, 5)
    assert [r.status for r in replies] == [409] * 5
    assert early_answers() == counted + 5, "uvicorn no longer runs the early answer path"

    protocol = early.server.config.http
    assert isinstance(protocol, type) and issubclass(protocol, EarlyHttpProtocol)
    registry = protocol.answers
    registry.enabled = False
    try:
        replies = await early.exchange(request * 2, 2)
    finally:
        registry.enabled = True
    assert [r.status for r in replies] == [409] * 2 and replies[0].body == replies[1].body
    assert early_answers() == counted + 5


async def test_a_request_held_for_its_body_through_shutdown_is_answered_and_closed(
    early: Served,
    start_drop: StartDrop,
    buy: Buy,
    auth: Auth,
) -> None:
    drop_id = await sold_out(start_drop, buy)
    request = attempt(drop_id, auth("lu", "viewer"))
    counted = early_answers()
    async with early.connection() as (reader, writer):
        writer.write(request[:-5])  # the body is not complete: the request is held
        await asyncio.sleep(0.05)
        (held,) = early.server.server_state.connections
        assert isinstance(held, EarlyHttpProtocol) and not held.cycle.response_complete
        early.server.should_exit = True  # graceful shutdown waits for this connection
        while held.cycle.keep_alive:
            await asyncio.sleep(0.01)
        writer.write(request[-5:])
        reply = await read_reply(reader)
        assert reply.status == 409 and reply.header(b"connection") == b"close"
        assert await asyncio.wait_for(reader.read(), 2) == b""
    assert early_answers() == counted + 1


async def test_a_storm_over_the_early_path_never_oversells(
    early: Served, start_drop: StartDrop, auth: Auth, resources: Resources
) -> None:
    drop = await start_drop(quantity=5, per_buyer_limit=2)
    buyers = [auth(f"storm-{i}", "viewer") for i in range(24)]
    counted = early_answers()

    async def keep_buying(n: int) -> list[int]:
        statuses = []
        async with early.connection() as (reader, writer):
            for k in range(12):
                writer.write(attempt(drop["id"], buyers[n], key=f"s{n}-{k}"))
                statuses.append((await read_reply(reader)).status)
        return statuses

    answered = [s for got in await asyncio.gather(*map(keep_buying, range(24))) for s in got]
    await drain_background()
    truth = await stock_truth(resources, drop["id"])
    assert answered.count(201) == truth["held"] == truth["ordered_units"] == 5
    assert truth["max_per_buyer"] <= 2
    assert set(answered) <= {201, 409, 429} and answered.count(409) > 200
    assert early_answers() > counted, "losers were answered early"
