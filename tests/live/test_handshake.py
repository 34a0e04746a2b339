"""The hub's opening handshake (RFC 6455 §4.2), over raw TCP: what it accepts, how it refuses
everything else, and that nothing the client sends around it is lost."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import msgspec
import pytest

from live.handshake import MAX_HEAD_BYTES
from tests.live.conftest import Room, RunningHub

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3's worked example

pytestmark = pytest.mark.timeout(30)


def head(
    *,
    method: str = "GET",
    path: str = "/connection/websocket",
    version: str = "HTTP/1.1",
    **headers: str,
) -> bytes:
    fields = {
        "Host": "hub.test",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in headers.items():
        fields[name.replace("_", "-")] = value
    lines = [f"{method} {path} {version}"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(hub: RunningHub, *chunks: bytes) -> tuple[bytes, bytes]:
    """Send `chunks` one write at a time; the response head, and what follows it until the hub
    closes the connection (or for one second)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)
        response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        rest = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), 1):
                rest += chunk
        except TimeoutError:
            pass
        return response_head, rest
    finally:
        writer.close()


def status(response_head: bytes) -> int:
    return int(response_head.split(b" ", 2)[1])


def frame(text: bytes) -> bytes:
    """A masked client text frame."""
    mask = b"\x01\x02\x03\x04"
    assert len(text) < 126
    return (
        bytes((0x81, 0x80 | len(text))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    )


def replies(data: bytes) -> list[dict]:
    """The JSON replies in the server's unmasked text frames."""
    out = []
    while data:
        size = data[1] & 0x7F
        start = 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        payload, data = data[start : start + size], data[start + size :]
        out += [msgspec.json.decode(line) for line in payload.split(b"\n")]
    return out


async def test_the_accept_key_is_rfc_6455s(hub: RunningHub) -> None:
    response_head, _ = await exchange(hub, head())
    assert response_head.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {ACCEPT}".encode() in response_head
    assert (
        base64.b64encode(
            hashlib.sha1(KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        == ACCEPT.encode()
    )


async def test_a_request_in_single_bytes_with_frames_behind_it_loses_nothing(
    hub: RunningHub, room: Room
) -> None:
    commands = frame(b'{"id":1,"connect":{}}') + frame(
        b'{"id":2,"subscribe":{"channel":"room:%d"}}' % int(room.id)
    )
    request = head()
    response_head, rest = await exchange(
        hub, *(request[i : i + 1] for i in range(len(request) - 1)), request[-1:] + commands
    )
    assert status(response_head) == 101
    got = {reply["id"]: reply for reply in replies(rest) if "id" in reply}
    assert "client" in got[1]["connect"]
    assert got[2]["subscribe"]["recoverable"] is True


@pytest.mark.parametrize(
    ("request_head", "code", "header"),
    [
        (head(Sec_WebSocket_Key="not base64!"), 400, b""),
        (head(Sec_WebSocket_Key=base64.b64encode(b"short").decode()), 400, b""),
        (head(Sec_WebSocket_Key=f"{KEY}, {KEY}"), 400, b""),  # sent twice
        (head(Sec_WebSocket_Key=""), 400, b""),
        (head(version="HTTP/1.0"), 400, b""),
        (head(Sec_WebSocket_Version="8"), 426, b"Sec-WebSocket-Version: 13"),
        (head(Upgrade=""), 426, b"Upgrade: websocket"),
        (head(Upgrade="h2c"), 426, b"Upgrade: websocket"),
        (head(Connection="keep-alive"), 426, b"Upgrade: websocket"),
        (head(method="POST"), 405, b"Allow: GET"),
        (head(path="/elsewhere"), 404, b""),
        (head(X_Padding="x" * MAX_HEAD_BYTES), 431, b""),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400, b""),  # TLS hello
    ],
)
async def test_what_is_not_a_websocket_upgrade_is_refused_and_closed(
    hub: RunningHub, request_head: bytes, code: int, header: bytes
) -> None:
    response_head, rest = await exchange(hub, request_head)
    assert status(response_head) == code, response_head
    assert header in response_head
    assert b"Connection: close" in response_head
    assert not hub.hub.sessions


async def test_too_many_headers_are_refused_431(hub: RunningHub) -> None:
    request = head().removesuffix(b"\r\n") + b"".join(b"X-%d: y\r\n" % i for i in range(200))
    response_head, _ = await exchange(hub, request + b"\r\n")
    assert status(response_head) == 431


async def test_connection_and_upgrade_are_token_lists(hub: RunningHub) -> None:
    response_head, _ = await exchange(
        hub, head(Connection="keep-alive, Upgrade", Upgrade="WebSocket")
    )
    assert status(response_head) == 101
