"""The WebSocket opening handshake (RFC 6455 §4.2): one HTTP/1.1 request read, checked, answered.

The request head is parsed by llhttp (Node's HTTP parser, through `httptools`, the parser uvicorn
uses) and checked here against §4.2.1; once answered with 101, the connection's frames belong to
the `websockets` library's sans-I/O `ServerProtocol`, created in its open state. The library's
own handshake (its generator-based HTTP parser, header objects, `Date` and `Server` headers)
costs about 43 µs per connection against 8 µs this way, in a join storm the biggest single part
of a join (`load_tests/README.md`).

Every answer other than 101 closes the connection: 400 for a malformed or incomplete upgrade,
403 for an Origin not allowed, 404 for another path, 405 for another method, 426 for a missing
upgrade or another protocol version, 431 for an oversized head.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
from email.utils import formatdate
from http import HTTPStatus

import httptools

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD_BYTES = 16_384  # request line and headers together
MAX_HEADERS = 128


class HandshakeError(Exception):
    """The request cannot be upgraded: answer `response` and close."""

    def __init__(self, status: HTTPStatus, text: str, *headers: tuple[str, str]) -> None:
        super().__init__(text)
        self.response = response(status, text, *headers)


class Request:
    """An HTTP request head, read from however many reads it takes. `headers` holds the
    lower-cased names; a repeated header's values are joined with ", " (RFC 9110 §5.3)."""

    __slots__ = ("_parser", "_size", "_too_many", "path", "headers", "complete", "rest")

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._size = 0
        self._too_many = False
        self.path = b""
        self.headers: dict[bytes, bytes] = {}
        self.complete = False
        self.rest = b""  # bytes that followed the head (the client's first frames, if any)

    def feed(self, data: bytes) -> bool:
        """Read `data`; True once the head is complete. Raises `HandshakeError`."""
        self._size += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.complete = True
            self.rest = data[int(upgrade.args[0]) :]
        except httptools.HttpParserError:
            raise HandshakeError(HTTPStatus.BAD_REQUEST, "malformed HTTP request") from None
        if self._too_many or self._size - len(self.rest) > MAX_HEAD_BYTES:
            raise HandshakeError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"
            )
        return self.complete

    @property
    def method(self) -> bytes:
        return self._parser.get_method()  # type: ignore[no-any-return]

    @property
    def http_version(self) -> str:
        return self._parser.get_http_version()  # type: ignore[no-any-return]

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    # --- httptools' callbacks ---

    def on_url(self, url: bytes) -> None:
        self.path += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        name = name.lower()
        if name in headers:
            headers[name] += b", " + value
        elif len(headers) >= MAX_HEADERS:
            self._too_many = True  # (an exception raised here would reach us as a parse error)
        else:
            headers[name] = value

    def on_message_complete(self) -> None:
        self.complete = True


def _tokens(value: bytes | None) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",")] if value else []


@functools.lru_cache(maxsize=64)
def _asks_upgrade(connection: bytes | None, upgrade: bytes | None) -> bool:
    """`Connection` lists upgrade and `Upgrade` is websocket (remembered: every client of a
    kind sends the same two values)."""
    return b"upgrade" in _tokens(connection) and _tokens(upgrade) == [b"websocket"]


def accept(request: Request, origins: frozenset[str | None] | None) -> bytes:
    """The 101 response to a valid WebSocket upgrade request (RFC 6455 §4.2.1-2); raises
    `HandshakeError` with the answer to any other request."""
    if request.method != b"GET":
        raise HandshakeError(HTTPStatus.METHOD_NOT_ALLOWED, "only GET", ("Allow", "GET"))
    if request.http_version != "1.1":
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "HTTP/1.1 required")
    headers = request.headers
    if not _asks_upgrade(headers.get(b"connection"), headers.get(b"upgrade")):
        raise HandshakeError(
            HTTPStatus.UPGRADE_REQUIRED,
            "a WebSocket upgrade is required",
            ("Upgrade", "websocket"),
        )
    if headers.get(b"sec-websocket-version") != b"13":
        raise HandshakeError(
            HTTPStatus.UPGRADE_REQUIRED,
            "Sec-WebSocket-Version 13 is required",
            ("Sec-WebSocket-Version", "13"),
        )
    key = headers.get(b"sec-websocket-key", b"")
    try:
        valid_key = len(binascii.a2b_base64(key, strict_mode=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        raise HandshakeError(HTTPStatus.BAD_REQUEST, "invalid Sec-WebSocket-Key")
    if origins is not None and request.header(b"origin") not in origins:
        raise HandshakeError(HTTPStatus.FORBIDDEN, "Origin not allowed")
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
        + binascii.b2a_base64(hashlib.sha1(key + _GUID).digest(), newline=False)
        + b"\r\n\r\n"
    )


def response(
    status: HTTPStatus,
    body: str | bytes,
    *headers: tuple[str, str],
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    """A complete HTTP/1.1 response that ends the connection."""
    payload = body.encode() + b"\n" if isinstance(body, str) else body
    head = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Date: {formatdate(usegmt=True)}",
        "Connection: close",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload
