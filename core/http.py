"""HTTP plumbing shared by every package's routes: JSON in and out, auth, errors in one shape."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Annotated, Any, TypeVar, get_args, get_origin

import asyncpg
import msgspec
import redis.exceptions
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from core.auth import Principal, authorize, bearer_token
from core.errors import (
    BadRequest,
    LivesellError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
)
from core.resources import Resources

log = logging.getLogger("livesell.http")

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)

MAX_BODY_BYTES = 1_048_576

# An id on the wire: a positive integer as text, without leading zeros, at most 18 digits (it
# fits a PostgreSQL bigint). The same rule holds in paths, bodies and queries. `$(?!\n)` is "end
# of text" in both Python's re (where `$` alone also matches before a final newline) and
# ECMA-262, which JSON Schema validators use.
ID_PATTERN = r"^[1-9][0-9]{0,17}$(?!\n)"
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="a numeric id, as a string")]
_ID = re.compile(ID_PATTERN)


class IdConvertor(Convertor[str]):
    """`{name:id}` in a route's path matches an id only, so that a literal segment beside it
    (`/chat/settings` next to `/chat/{message_id:id}`) is never taken for one. The id stays text."""

    regex = "[1-9][0-9]{0,17}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())
# Text PostgreSQL can store: no NUL (decode_json refuses it in any string).
TEXT = r"^[^\x00]*$(?!\n)"
# Text with something besides whitespace: Python's whitespace (str.isspace) spelled out, since
# `\s` means a different set in ECMA-262 regexes; blanks, then one other character, then any
# (the classes are disjoint, so matching never backtracks).
_BLANK = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = rf"^[{_BLANK}]*[^\x00{_BLANK}][^\x00]*$(?!\n)"

_encoder = msgspec.json.Encoder()


class JSON(Response):
    """A JSON response encoded by msgspec (Structs, dataclasses, datetimes all welcome)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def principal(request: Request) -> Principal | None:
    """The caller, or None for an anonymous request; a bad token is refused, never ignored."""
    cached = request.scope.get("livesell.principal", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    token = bearer_token(request.headers.get("authorization"))
    found = resources(request).tokens.verify(token) if token else None
    request.scope["livesell.principal"] = found
    return found


def require(request: Request, *roles: str) -> Principal:
    """The authenticated caller, holding one of `roles` when any are named."""
    return authorize(principal(request), roles or None)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed `limit`: by its declared
    length, or while streaming, so an oversized body is never buffered whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(body)


async def read_json(request: Request, kind: type[T]) -> T:
    """Decode and validate the body as `kind`; errors name the offending field."""
    body = await read_body(request)
    if not body.strip():
        body = b"{}"
    return decode_json(body, kind)


# A JSON `\u0000` escape that is not itself escaped (`\\u0000` is the text "\u0000").
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def read_query(request: Request, kind: type[S]) -> S:
    """Decode and validate the query string as `kind` (a Struct of optional fields); numbers
    arrive as text and are converted; unknown or repeated parameters are refused like bad bodies."""
    params = request.query_params
    repeated = [name for name in params if len(params.getlist(name)) > 1]
    if repeated:
        raise Unprocessable(f"query parameter {repeated[0]!r} given twice", field=repeated[0])
    fields = {f.encode_name: f.type for f in msgspec.structs.fields(kind)}
    given: dict[str, Any] = {}
    for name, value in params.items():
        if name not in fields:
            given[name] = value  # refused below, as an unknown field
            continue
        try:
            # as the field's type without the None: a query has no null (lax conversion would
            # read the text "null" as one)
            present = present_type(fields[name])
            given[name] = msgspec.convert(value, type=present, strict=not _numeric(present))
        except msgspec.ValidationError as exc:
            raise Unprocessable(f"invalid query: {exc} - at `$.{name}`", field=name) from None
    try:
        return msgspec.convert(given, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        raise Unprocessable(f"invalid query: {exc}", field=_field_of(str(exc))) from None


def _numeric(kind: Any) -> bool:
    """Whether a query value must be read as a number or bool (the only lax conversions: a
    datetime must be written as one, not as a number of seconds)."""
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    return kind in (int, float, bool)


def present_type(kind: Any) -> Any:
    """`X` for `X | None`: an absent query parameter is the None, there is no null on the wire."""
    args = getattr(kind, "__args__", None)
    if args and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return kind


def decode_json(body: bytes, kind: type[T]) -> T:
    # PostgreSQL text cannot hold NUL: refuse it here, once, rather than fail in a query
    if b"\\u0000" in body and _NUL_ESCAPE.search(body):
        raise Unprocessable("text may not contain NUL (\\u0000) characters")
    try:
        return msgspec.json.decode(body, type=kind, strict=True)
    except msgspec.ValidationError as exc:
        error = exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if "got `float`" in str(error):
        # JSON (and JSON Schema's `integer`) does not tell 5.0 from 5: an integral number is an
        # integer however it is written. Rare, so only tried once the fast decode refused.
        try:
            whole = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:  # malformed past the point the typed decode reached
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        try:
            return msgspec.convert(_integral_as_int(whole), kind, strict=True)
        except msgspec.ValidationError as exc:
            error = exc
    raise Unprocessable(f"invalid body: {error}", field=_field_of(str(error))) from None


def _integral_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_as_int(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_as_int(v) for k, v in value.items()}
    return value


def _field_of(message: str) -> str | None:
    # msgspec says "... - at `$.quantity`"
    marker = "at `$"
    if marker not in message:
        return None
    return message.split(marker, 1)[1].rstrip("`").lstrip(".") or None


def path_id(request: Request, name: str = "id") -> int:
    """An id (`Id`) from the path; anything else is a 404, as no such thing exists."""
    raw = request.path_params.get(name, "")
    if not isinstance(raw, str) or _ID.search(raw) is None:
        raise NotFound(f"no {name.removesuffix('_id') or 'item'} {raw!r}")
    return int(raw)


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    error.update({k: v for k, v in details.items() if v is not None})
    return {"error": error}


def error_response(exc: LivesellError) -> Response:
    """The one JSON shape every livesell error takes on the wire."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    retry_after = exc.details.get("retry_after_s")
    if exc.status in (429, 503) and isinstance(retry_after, int):
        headers = {"Retry-After": str(retry_after)}
    return JSON(error_body(exc.code, exc.message, **exc.details), exc.status, headers=headers)


async def livesell_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LivesellError)
    return error_response(exc)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    return JSON(error_body(code, message), exc.status_code, headers=exc.headers)


async def dependency_error_handler(request: Request, exc: Exception) -> Response:
    """PostgreSQL or Redis unreachable: a clear 503 the client may retry."""
    redis_errors = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException)
    part = "redis" if isinstance(exc, redis_errors) else "postgres"
    log.warning("%s unavailable during %s %s: %s", part, request.method, request.url.path, exc)
    error = ServiceUnavailable(f"{part} is unavailable; retry shortly", dependency=part)
    return JSON(
        error_body(error.code, error.message, **error.details), 503, headers={"Retry-After": "1"}
    )


async def data_error_handler(request: Request, exc: Exception) -> Response:
    """PostgreSQL refused a value as data (SQLSTATE class 22: out of range, bad encoding...):
    input that slipped past validation is still the client's error, never a 500."""
    log.warning("data refused by PostgreSQL on %s %s: %s", request.method, request.url.path, exc)
    return JSON(error_body("unprocessable", "a value is out of range or not valid text"), 422)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSON(error_body("internal", "internal error"), 500)


DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # a cluster with no primary for a slot (a failover under way), or no node reachable
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    ConnectionError,
    OSError,
)


def exception_handlers() -> dict[Any, Any]:
    handlers: dict[Any, Any] = {
        LivesellError: livesell_error_handler,
        HTTPException: http_error_handler,
        asyncpg.exceptions.DataError: data_error_handler,
        Exception: unexpected_error_handler,
    }
    for kind in DEPENDENCY_ERRORS:
        handlers[kind] = dependency_error_handler
    return handlers


def roles_text(roles: Iterable[str]) -> str:
    return ", ".join(roles)
