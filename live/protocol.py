"""The hub's wire protocol: the JSON form of Centrifugo's client protocol v2 (the subset we speak).

Inbound, every frame holds one or more JSON commands separated by `\\n`. A command names its
method by the one field it carries (`{"id": 2, "subscribe": {...}}`); a command with no `id` and
no method is the client's pong `{}`. Outbound, replies carry the command's `id`, pushes carry none.

Every wire type is `gc=False`: a command or reply is built, encoded or read, and dropped, and
never takes part in a reference cycle, so the collector need not track the thousands a join
storm makes.

Inbound types do not forbid unknown fields: the Centrifugo SDKs add optional fields over time
(`flag`, `tf`, `delta`, ...) and a reference server ignores what it does not know; refusing them
would disconnect every viewer on the next SDK release. Unknown *methods* are answered with 104.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from core.errors import Forbidden, LivesellError, NotFound, Unauthorized
from live.errors import (
    HubBadRequest,
    HubError,
    HubUnauthorized,
    InternalError,
    PermissionDenied,
    TokenExpired,
    UnknownChannel,
)

# --- client → server -------------------------------------------------------------------------


class ConnectRequest(msgspec.Struct, omit_defaults=True, gc=False):
    token: str = ""
    data: Any = None  # ignored: this hub has no connect proxy
    subs: Any = None  # server-side subscriptions: not offered
    name: str = ""
    version: str = ""
    headers: dict[str, str] | None = None


# Stream offsets are unsigned 64-bit integers in the protocol: a negative or larger one (like a
# fraction or a string) does not decode, and the command is a bad request, as in Centrifugo.
# (msgspec bounds stop at int64; `decode_commands` checks the upper one.)
MAX_OFFSET = 2**64 - 1
Offset = Annotated[int, msgspec.Meta(ge=0)]


class SubscribeRequest(msgspec.Struct, omit_defaults=True, gc=False):
    channel: str = ""
    token: str = ""
    recover: bool = False
    epoch: str = ""
    offset: Offset = 0
    data: Any = None  # ignored: no subscribe proxy
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    delta: str = ""
    flag: int = 0


# The SDK's subscribe `flag` bit asking for error 112 instead of `recovered: false`.
FLAG_REJECT_UNRECOVERED = 2


class UnsubscribeRequest(msgspec.Struct, omit_defaults=True, gc=False):
    channel: str = ""


class RefreshRequest(msgspec.Struct, omit_defaults=True, gc=False):
    token: str = ""


class Command(msgspec.Struct, omit_defaults=True, gc=False):
    id: int = 0
    connect: ConnectRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    refresh: RefreshRequest | None = None
    publish: Any = None  # chat: checked by live.chat (Centrifugo's PublishRequest)
    # methods of the full protocol this hub does not offer: answered with 104
    presence: Any = None
    presence_stats: Any = None
    history: Any = None
    ping: Any = None
    send: Any = None
    rpc: Any = None
    sub_refresh: Any = None

    @property
    def is_pong(self) -> bool:
        # every method but the asynchronous `send` carries an id; an id-less command is a pong
        return self.id == 0 and self.send is None


# --- server → client -------------------------------------------------------------------------


class ErrorBody(msgspec.Struct, omit_defaults=True, gc=False):
    code: int
    message: str
    temporary: bool = False


class ConnectResult(msgspec.Struct, omit_defaults=True, gc=False):
    client: str
    version: str
    ping: int
    pong: bool
    node: str = ""
    # the token carries `exp`: refresh it within `ttl` seconds
    expires: bool = False
    ttl: int = 0


class RefreshResult(msgspec.Struct, omit_defaults=True, gc=False):
    expires: bool = False
    ttl: int = 0


class Publication(msgspec.Struct, omit_defaults=True, gc=False):
    data: msgspec.Raw
    offset: int = 0


class SubscribeResult(msgspec.Struct, omit_defaults=True, gc=False):
    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    positioned: bool = False
    was_recovering: bool = False
    recovered: bool = False
    publications: list[Publication] = msgspec.field(default_factory=list)
    data: msgspec.Raw | None = None


class Empty(msgspec.Struct, gc=False):
    pass


class Reply(msgspec.Struct, omit_defaults=True, gc=False):
    id: int = 0
    error: ErrorBody | None = None
    connect: ConnectResult | None = None
    subscribe: SubscribeResult | None = None
    unsubscribe: Empty | None = None
    refresh: RefreshResult | None = None
    publish: Empty | None = None


class UnsubscribePush(msgspec.Struct, gc=False):
    code: int
    reason: str


class DisconnectPush(msgspec.Struct, gc=False):
    code: int
    reason: str
    reconnect: bool


class Push(msgspec.Struct, omit_defaults=True, gc=False):
    channel: str = ""
    pub: Publication | None = None
    unsubscribe: UnsubscribePush | None = None
    disconnect: DisconnectPush | None = None


class PushMessage(msgspec.Struct, gc=False):
    push: Push


PING = b"{}"

# Unsubscribe push codes: < 2500 final, >= 2500 make the SDK subscribe again (and recover).
UNSUBSCRIBE_INSUFFICIENT_STATE = 2500

_decoder = msgspec.json.Decoder(Command, strict=False)
_encoder = msgspec.json.Encoder()
encode = _encoder.encode


def decode_commands(frame: bytes | str) -> list[Command]:
    """Every command in a frame, in order; a line that is not a command raises HubBadRequest."""
    lines = frame.split("\n") if isinstance(frame, str) else frame.split(b"\n")
    return [_decode(line) for line in lines if line.strip()]


def _decode(line: bytes | str) -> Command:
    try:
        command = _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HubBadRequest(str(exc)) from None
    if command.subscribe is not None and command.subscribe.offset > MAX_OFFSET:
        raise HubBadRequest("offset out of range")
    return command


def subscribe_reply(command_id: int, result: bytes) -> bytes:
    """A subscribe reply around an encoded `SubscribeResult` shared by many joiners: the same
    bytes as `encode(Reply(id=command_id, subscribe=result))`."""
    if not command_id:
        return b'{"subscribe":%s}' % result  # an id of 0 is omitted, like every default
    return b'{"id":%d,"subscribe":%s}' % (command_id, result)


def publication_push(channel: str, data: bytes, offset: int) -> bytes:
    """One publication as a push: encoded once, then written to every subscriber."""
    return encode(PushMessage(Push(channel=channel, pub=Publication(msgspec.Raw(data), offset))))


def unsubscribe_push(channel: str, code: int, reason: str) -> bytes:
    return encode(PushMessage(Push(channel=channel, unsubscribe=UnsubscribePush(code, reason))))


def disconnect_push(code: int, reason: str, reconnect: bool) -> bytes:
    return encode(PushMessage(Push(disconnect=DisconnectPush(code, reason, reconnect))))


def error_reply(command_id: int, error: HubError) -> bytes:
    message = error.detail if error.public and error.detail else error.message
    body = ErrorBody(error.code, message, error.temporary)
    return encode(Reply(id=command_id, error=body))


def hub_error_for(exc: Exception) -> HubError:
    """The one mapping from errors raised while serving a command to protocol error codes."""
    match exc:
        case HubError():
            return exc
        case Unauthorized(details={"reason": "expired"}):
            return TokenExpired(exc.message)
        case Unauthorized():
            return HubUnauthorized(exc.message)
        case Forbidden():
            return PermissionDenied(exc.message)
        case NotFound():
            return UnknownChannel(exc.message)
        case LivesellError():
            return HubBadRequest(exc.message)
        case _:
            return InternalError()
