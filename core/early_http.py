"""Answers decided at the HTTP protocol layer, before any ASGI cycle exists.

Some requests are answered the same way every time a cheap local check says so (a flash sale's
losers after the sell-out), and for those the ASGI cycle (a task, the scope, receive/send,
the middleware stack, routing) costs several times the decision. An *early answerer*,
registered in `EarlyAnswers`, names a method and a request-target pattern; for each request
that matches, `EarlyHttpProtocol` (uvicorn's httptools protocol, through its `Config(http=...)`
hook) holds the request's ASGI cycle back until the body is complete, asks the answerer, and
either writes its answer in one `transport.write` or starts the ordinary cycle with the body
already read, so the application sees exactly the request it would have seen.

When one read from the socket is exactly one whole request, `_WholeRequest` (a second
httptools parser whose callbacks only collect) reads it before uvicorn's parser sees it, and an
answered request never gets a scope or a cycle; anything else (part of a request, several, or
what httptools refuses) goes to uvicorn's parser untouched, which is then between messages as
before.

Only a plain request is ever held: HTTP/1.1, a registered method and target (no query string),
a Content-Length of at most the answerer's `max_body` and no Transfer-Encoding, Expect or
Upgrade, and nothing else in flight or queued on the connection (pipelined answers stay in
order). An early answer is written as uvicorn's own cycle would write it: the status line,
uvicorn's default headers (`date`, `server`), the answer's headers, `connection: close` when
the connection is not kept alive, then the body; the keep-alive timeout, request counting
(`--limit-max-requests`), graceful shutdown and the HTTP metrics (by route template) behave as
for any other request.

The subclass uses uvicorn internals (`_start_asgi_task`, the cycle's fields): `pyproject.toml`
pins the uvicorn versions it was tested with, this module refuses to load (and the protocol to
serve) on one whose protocol or cycle no longer has the parts it uses, and a test fails when
the early path stops answering.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_path_with_query_string

from core.metrics import LoopCounter, observe_request

log = logging.getLogger("livesell.early_http")

# the largest body an answerer may ask to see (a request declaring more is never held)
MAX_BODY = 1024

EARLY_ANSWERS = LoopCounter(
    "livesell_http_early_answers_total",
    "requests answered at the HTTP protocol layer, without an ASGI cycle",
    ["route"],
)

# a request's headers by lower-case name, the first of repeated ones winning (as Starlette's
# Headers reads them)
Headers = Mapping[bytes, bytes]


def first_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Headers by (lower-case) name, the first one winning, as in Starlette's Headers."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        if name not in headers:
            headers[name] = value
    return headers


class Answer:
    """A complete response: status, headers (lower-case names) and body. Immutable; an
    answerer may hand out the same Answer many times (its header block is rendered once, and
    the whole response once per value of the server's default headers)."""

    __slots__ = ("status", "headers", "body", "_block", "_closes", "_rendered")

    def __init__(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = tuple((name.lower(), value) for name, value in headers)
        self.body = body
        block = []
        has_length = closes = False
        for name, value in self.headers:
            if name == b"content-length":
                has_length = True
            elif name == b"connection":
                closes = b"close" in [token.lower().strip() for token in value.split(b",")]
            block.append(b"%s: %s\r\n" % (name, value))
        if not has_length:
            block.append(b"content-length: %d\r\n" % len(body))
        self._block = b"".join(block)
        self._closes = closes
        # (the server's default header block, the whole response after it) last rendered
        self._rendered: tuple[bytes, bytes] | None = None

    def render(self, defaults: bytes, close: bool) -> bytes:
        """The response on the wire, after the server's default headers `defaults`; `close`
        adds `connection: close` (unless the answer carries its own Connection header)."""
        if close and not self._closes:
            return b"".join(
                (STATUS_LINE[self.status], defaults, self._block, b"connection: close\r\n\r\n",
                 self.body)
            )  # fmt: skip
        rendered = self._rendered
        if rendered is None or rendered[0] is not defaults:
            wire = b"".join((STATUS_LINE[self.status], defaults, self._block, b"\r\n", self.body))
            rendered = self._rendered = (defaults, wire)
        return rendered[1]

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.headers!r}, {self.body!r})"


@dataclass(frozen=True, slots=True)
class EarlyAnswerer:
    """Answers some requests to `method` + a target matching `target` (fullmatch, bytes).

    `answer(match, headers, body)` gets the target's match, the request's headers (lower-case
    names, the first of repeated ones) and its complete body; it returns the Answer the
    application would give, or None to let the application answer. It runs on the event loop
    inside the protocol's parser callback: it must not block, and an exception it raises only
    sends the request on to the application (and is logged)."""

    method: bytes
    target: re.Pattern[bytes]
    route: str  # the route template the HTTP metrics count the answer under
    answer: Callable[[re.Match[bytes], Headers, bytes], Answer | None]
    max_body: int = MAX_BODY

    def __post_init__(self) -> None:
        if self.method in (b"HEAD", b"GET") or not self.method.isupper():
            raise ValueError("early answers are for requests with a body, not HEAD or GET")
        if not 0 <= self.max_body <= MAX_BODY:
            raise ValueError(f"max_body must be within 0..{MAX_BODY}")


class EarlyAnswers:
    """The answerers a server consults; empty (every request goes to the application) until
    an application registers some, typically for the span of its lifespan."""

    def __init__(self) -> None:
        self._by_method: dict[bytes, tuple[EarlyAnswerer, ...]] = {}
        # the hook's own switch: off, every request takes the ordinary ASGI path
        self.enabled = True

    def __bool__(self) -> bool:
        return self.enabled and bool(self._by_method)

    def add(self, answerer: EarlyAnswerer) -> None:
        self._by_method[answerer.method] = (*self._by_method.get(answerer.method, ()), answerer)

    def remove(self, answerer: EarlyAnswerer) -> None:
        left = tuple(a for a in self._by_method.get(answerer.method, ()) if a is not answerer)
        if left:
            self._by_method[answerer.method] = left
        else:
            self._by_method.pop(answerer.method, None)

    @contextmanager
    def serving(self, answerers: Iterable[EarlyAnswerer]) -> Iterator[None]:
        """Register `answerers` for the duration of the block."""
        added = list(answerers)
        for answerer in added:
            self.add(answerer)
        try:
            yield
        finally:
            for answerer in added:
                self.remove(answerer)

    def find(self, method: bytes, target: bytes) -> tuple[EarlyAnswerer, re.Match[bytes]] | None:
        for answerer in self._by_method.get(method, ()):
            match = answerer.target.fullmatch(target)
            if match is not None:
                return answerer, match
        return None


@dataclass(slots=True)
class _Held:
    """A request whose ASGI cycle waits for its body before the answerer is asked."""

    cycle: RequestResponseCycle
    app: Any
    answerer: EarlyAnswerer
    match: re.Match[bytes]
    started: float


class EarlyHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering what `answers` can answer without the app."""

    answers: EarlyAnswers = EarlyAnswers()
    _fields_checked: bool = False
    _cycle_checked: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not EarlyHttpProtocol._fields_checked:
            _require(self, _PROTOCOL_FIELDS, "httptools protocol")
            EarlyHttpProtocol._fields_checked = True
        self._candidate: tuple[EarlyAnswerer, re.Match[bytes], float] | None = None
        self._held: _Held | None = None
        # uvicorn's parser has begun a request it has not finished
        self._mid_message = False
        self._whole: _WholeRequest | None = None
        # loop time of the last answer to a request read whole (see _idle_again)
        self._idle_since = -math.inf

    # --- whole requests in one read ---

    def data_received(self, data: bytes) -> None:
        if self._mid_message or not self.answers:
            super().data_received(data)
            return
        if not self._answer_whole(data):
            super().data_received(data)

    def _answer_whole(self, data: bytes) -> bool:
        """Answer `data` early when it is exactly one whole plain request the answerer
        answers; False leaves all of it to uvicorn's parser, between messages as before."""
        if not self._free_to_answer():
            return False
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency
            or len(self.tasks) >= self.limit_concurrency
        ):
            return False  # uvicorn answers 503
        whole = self._whole
        if whole is None:
            whole = self._whole = _WholeRequest()
        request = whole.read(data)
        if request is None:
            return False
        found = self.answers.find(request.method, request.url)
        if found is None:
            return False
        answerer, match = found
        headers = request.headers
        if (
            b"content-length" not in headers  # httptools refuses a repeated or bad one
            or not _NEVER_EARLY.isdisjoint(headers)
            or len(request.body) > answerer.max_body
        ):
            return False
        started = time.perf_counter()
        answer = _ask(answerer, match, headers, request.body)
        if answer is None:
            return False
        method = request.method.decode("ascii")
        path = request.url.decode("latin-1")
        self._send(
            answer, request.keep_alive, method, path, "1.1", answerer.route, started, whole=True
        )
        return True

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        self._mid_message = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._candidate = self._early_candidate() if self.answers else None
        try:
            super().on_headers_complete()  # builds the cycle, then _start_asgi_task below
        finally:
            self._candidate = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        candidate = self._candidate
        # `app` is another one when uvicorn refuses the request (limit_concurrency's 503)
        if candidate is not None and cycle is self.cycle and app is self.app:
            self._candidate = None
            if not EarlyHttpProtocol._cycle_checked:
                _require(cycle, _CYCLE_FIELDS, "request/response cycle")
                EarlyHttpProtocol._cycle_checked = True
            self._held = _Held(cycle, app, *candidate)
            return
        super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        self._mid_message = False
        super().on_message_complete()
        held = self._held
        if held is None:
            return
        self._held = None
        answer = None
        cycle = held.cycle
        if not (cycle.disconnected or self.transport.is_closing() or self.flow.write_paused):
            headers = first_headers(cycle.scope["headers"])
            answer = _ask(held.answerer, held.match, headers, bytes(cycle.body))
        if answer is None:
            super()._start_asgi_task(cycle, held.app)
        else:
            self._write_answer(held, answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._held = None  # its body will not come: nobody is left to answer
        super().connection_lost(exc)

    # --- the early path ---

    def _free_to_answer(self) -> bool:
        """Nothing in flight or queued on the connection (answers stay in order), and it can
        take a write."""
        if self.root_path or self.pipeline or self.transport.is_closing() or self.flow.write_paused:
            return False
        return self.cycle is None or self.cycle.response_complete

    def _early_candidate(self) -> tuple[EarlyAnswerer, re.Match[bytes], float] | None:
        if not self._free_to_answer():
            return None
        parser = self.parser
        if parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        found = self.answers.find(parser.get_method(), self.url)
        if found is None:
            return None
        answerer, match = found
        length = _plain_length(self.headers)
        if length is None or length > answerer.max_body:
            return None
        return answerer, match, time.perf_counter()

    def _write_answer(self, held: _Held, answer: Answer) -> None:
        cycle = held.cycle
        scope = cycle.scope
        cycle.response_started = cycle.response_complete = True
        cycle.keep_alive = self._send(
            answer,
            cycle.keep_alive,
            scope["method"],
            get_path_with_query_string(scope),
            scope["http_version"],
            held.answerer.route,
            held.started,
        )

    def _send(
        self,
        answer: Answer,
        keep_alive: bool,
        method: str,
        path: str,
        http_version: str,
        route: str,
        started: float,
        *,
        whole: bool = False,
    ) -> bool:
        """Write `answer` as uvicorn's cycle would, count it, and finish the request as
        uvicorn does; return whether the connection stays open."""
        if answer._closes:
            keep_alive = False
        if self.access_log:
            client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d', client, method, path, http_version, answer.status
            )
        defaults = _defaults_block(self.server_state.default_headers)
        self.transport.write(answer.render(defaults, not keep_alive))
        observe_request(method, route, answer.status, time.perf_counter() - started)
        EARLY_ANSWERS.inc(route)
        if not keep_alive:
            self.transport.close()
        if whole:  # nothing was in flight or queued: no pipeline to start
            self.server_state.total_requests += 1
            if keep_alive:
                self._idle_again()
        else:
            self.on_response_complete()  # counts the request, re-arms keep-alive or the pipeline
        return keep_alive

    def _idle_again(self) -> None:
        """After an answer to a request read whole (nothing in flight or queued): as uvicorn's
        on_response_complete, except that a keep-alive timer already armed stays armed, and
        `timeout_keep_alive_handler` re-arms it for what is left when it fires, rather than
        cancelling and arming a timer for every request."""
        self.flow.resume_reading()
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def timeout_keep_alive_handler(self) -> None:
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(
                left, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()


# the server's default headers (a list uvicorn replaces every second, for its `date`) last
# rendered, and the block: every connection writes the same bytes object, so an Answer renders
# itself once per second, not once per connection
_last_defaults: tuple[object, bytes] = (None, b"")


def _defaults_block(defaults: list[tuple[bytes, bytes]]) -> bytes:
    global _last_defaults
    if _last_defaults[0] is not defaults:
        block = b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in defaults)
        _last_defaults = (defaults, block)
    return _last_defaults[1]


def _ask(
    answerer: EarlyAnswerer, match: re.Match[bytes], headers: Headers, body: bytes
) -> Answer | None:
    """The answerer's answer; an exception it raises leaves the request to the application."""
    try:
        return answerer.answer(match, headers, body)
    except Exception:
        log.exception("early answer for %s failed; the application answers", answerer.route)
        return None


_NEVER_EARLY = frozenset({b"transfer-encoding", b"expect", b"upgrade"})


class _WholeRequest:
    """A second httptools parser, with callbacks that only collect, for data that may be one
    whole request: `read` returns it when the data is exactly one complete plain request
    (HTTP/1.1, no upgrade), else None, leaving this parser between messages either way."""

    __slots__ = (
        "parser",
        "method",
        "url",
        "headers",
        "body",
        "keep_alive",
        "plain",
        "begun",
        "complete",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.method = self.url = self.body = b""
        # lower-case name -> the first value (see Headers)
        self.headers: dict[bytes, bytes] = {}
        self.keep_alive = self.plain = False
        self.begun = self.complete = 0

    def read(self, data: bytes) -> _WholeRequest | None:
        self.url = self.body = b""
        self.headers = {}
        self.begun = self.complete = 0
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.__init__()  # type: ignore[misc]  # uvicorn's parser answers it its own way
            return None
        if self.begun != self.complete:
            self.__init__()  # type: ignore[misc]  # part of a request: start afresh next time
            return None
        return self if self.complete == 1 and self.plain else None

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.setdefault(name.lower(), value)

    def on_headers_complete(self) -> None:
        parser = self.parser  # asked now: the parser forgets once the message is complete
        self.method = parser.get_method()
        self.keep_alive = parser.should_keep_alive()
        self.plain = parser.get_http_version() == "1.1" and not parser.should_upgrade()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1


def _plain_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a request with one, and no Transfer-Encoding, Expect or
    Upgrade (lower-case names); else None."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name in _NEVER_EARLY:
            return None
    return length


# what EarlyHttpProtocol relies on in uvicorn's protocol and its request/response cycle
_PROTOCOL_METHODS = (
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
    "_start_asgi_task",
    "_unset_keepalive_if_required",
    "timeout_keep_alive_handler",
    "connection_lost",
    "shutdown",
)
_PROTOCOL_FIELDS = (
    "loop",
    "timeout_keep_alive",
    "timeout_keep_alive_task",
    "access_log",
    "access_logger",
    "app",
    "client",
    "connections",
    "cycle",
    "flow",
    "headers",
    "limit_concurrency",
    "parser",
    "pipeline",
    "root_path",
    "server_state",
    "tasks",
)
_CYCLE_FIELDS = (
    "body",
    "disconnected",
    "keep_alive",
    "response_complete",
    "response_started",
    "scope",
)


def _require(owner: object, names: Iterable[str], what: str) -> None:
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        raise RuntimeError(
            f"uvicorn's {what} lacks {', '.join(missing)}, which the early answer path uses "
            "(see the uvicorn pin in pyproject.toml)"
        )


_require(HttpToolsProtocol, _PROTOCOL_METHODS, "httptools protocol")


def protocol_class(answers: EarlyAnswers) -> type[EarlyHttpProtocol]:
    """An EarlyHttpProtocol consulting `answers`, for `uvicorn.Config(http=...)`."""
    return type("EarlyHttpProtocol", (EarlyHttpProtocol,), {"answers": answers})


__all__ = [
    "EARLY_ANSWERS",
    "MAX_BODY",
    "Answer",
    "EarlyAnswerer",
    "EarlyAnswers",
    "EarlyHttpProtocol",
    "protocol_class",
]
