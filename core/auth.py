"""JWT auth: HS256 tokens with `sub` and `roles`, minted by the integrating app (or locally)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, cast

import jwt
import msgspec
from jwt.algorithms import HMACAlgorithm

from core.errors import Forbidden, Unauthorized

ROLES = frozenset({"host", "viewer", "distributor", "admin"})
ALGORITHM = "HS256"
# seconds of clock skew tolerated on exp / nbf / iat
LEEWAY_S = 5
# verified tokens remembered per process; a flash-sale storm repeats each buyer's token many
# times, and an HMAC check plus JSON decode costs tens of µs per request
VERIFIED_TOKENS_MAX = 10_000


class Principal(msgspec.Struct, frozen=True):
    user_id: str
    roles: frozenset[str]

    def has_any(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def mint_token(secret: str, sub: str, roles: Iterable[str], ttl_s: int = 86_400) -> str:
    roles = list(roles)
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")
    if not sub or len(sub) > 128 or not sub.isprintable():
        raise ValueError("sub must be 1 to 128 printable characters")
    now = int(time.time())
    claims = {"sub": sub, "roles": roles, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class VerifiedTokens:
    """A bounded LRU of tokens that passed verification, keyed by the token string.

    Only successes are remembered, together with the secret that verified them and their
    `exp`; every hit re-checks both, so a remembered token stops working at the same moment a
    full verification would refuse it. A token string that differs in any byte is a miss."""

    def __init__(self, max_entries: int = VERIFIED_TOKENS_MAX) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[str, float | None, Principal]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, secret: str, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        verified_with, expires_at, who = entry
        if verified_with != secret or (expires_at is not None and time.time() >= expires_at):
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return who

    def put(self, secret: str, token: str, who: Principal, exp: object) -> None:
        # PyJWT refuses once `exp <= now - leeway`
        expires_at = float(exp) + LEEWAY_S if isinstance(exp, int | float) else None
        self._entries[token] = (secret, expires_at, who)
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


verified_tokens = VerifiedTokens()


def verify_token(secret: str, token: str) -> Principal:
    """Decode and check a token; any defect is Unauthorized with the reason."""
    known = verified_tokens.get(secret, token)
    if known is not None:
        return known
    minted = _minted(secret, token)
    if minted is not None:
        roles = [] if minted.roles is msgspec.UNSET else minted.roles
        who = _principal(minted.sub, roles)
        exp: object = None if minted.exp is msgspec.UNSET else minted.exp
    else:
        claims = _decoded_claims(secret, token)
        who = _principal(claims.get("sub"), claims.get("roles", []))
        exp = claims.get("exp")
    verified_tokens.put(secret, token, who, exp)
    return who


def _decoded_claims(secret: str, token: str) -> dict[str, Any]:
    """PyJWT's verification, the one of record: every token it refuses is refused."""
    try:
        # algorithms pinned: a token claiming `none` or RS256 is refused, never trusted
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub"]}, leeway=LEEWAY_S
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired", reason="expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("token not yet valid", reason="not_yet_valid") from None
    except jwt.InvalidTokenError:
        # PyJWT's reasons can quote Python internals ("'utf-8' codec can't decode byte ...")
        raise Unauthorized("invalid token", reason="invalid") from None
    return claims


def _principal(sub: object, raw_roles: object) -> Principal:
    # user ids are stored as text: printable only (PostgreSQL refuses NUL, logs hate controls)
    if not isinstance(sub, str) or not sub or len(sub) > 128 or not sub.isprintable():
        raise Unauthorized(
            "invalid token: sub must be 1 to 128 printable characters", reason="invalid"
        )
    if isinstance(raw_roles, str):
        raw_roles = [raw_roles]
    if not isinstance(raw_roles, list):
        raise Unauthorized("invalid token: roles must be a list", reason="invalid")
    return Principal(user_id=sub, roles=_roles(raw_roles))


def _roles(raw: list[Any]) -> frozenset[str]:
    """The known roles among a token's `roles` (a handful of sets, shared)."""
    if len(raw) <= 4 and all(type(role) is str for role in raw):
        return _known_roles(tuple(raw))
    return frozenset(r for r in raw if isinstance(r, str) and r in ROLES)


@functools.lru_cache(maxsize=64)
def _known_roles(raw: tuple[str, ...]) -> frozenset[str]:
    return frozenset(r for r in raw if r in ROLES)


# The header segments of the tokens mint_token and common HS256 issuers produce
# ({"alg":"HS256","typ":"JWT"} in either order, or alone).
_MINTED_HEADERS = frozenset(
    base64.urlsafe_b64encode(header).rstrip(b"=").decode("ascii")
    for header in (
        b'{"alg":"HS256","typ":"JWT"}',
        b'{"typ":"JWT","alg":"HS256"}',
        b'{"alg":"HS256"}',
    )
)


class _MintedClaims(msgspec.Struct, forbid_unknown_fields=True):
    """The claims livesell mints: `sub` a string, the times integers, nothing else."""

    sub: str
    roles: Any = msgspec.UNSET
    iat: int | msgspec.UnsetType = msgspec.UNSET
    nbf: int | msgspec.UnsetType = msgspec.UNSET
    exp: int | msgspec.UnsetType = msgspec.UNSET


_decode_minted = msgspec.json.Decoder(_MintedClaims).decode


@functools.lru_cache(maxsize=8)
def _hmac_key(secret: str) -> bytes | None:
    """The secret as PyJWT's HS256 uses it, or None when PyJWT would refuse it as a key."""
    try:
        return cast(bytes, HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret))
    except jwt.InvalidKeyError:
        return None


@functools.lru_cache(maxsize=8)
def _hmac_pads(secret: str) -> tuple[Any, Any] | None:
    """SHA-256 states fed the HMAC key's inner and outer pads (RFC 2104), for copying: an
    HMAC of the key is then two copies and two updates, without deriving the pads again."""
    key = _hmac_key(secret)
    if key is None:
        return None
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return (
        hashlib.sha256(key.translate(_INNER_PAD)),
        hashlib.sha256(key.translate(_OUTER_PAD)),
    )


_SHA256_BLOCK = 64
_INNER_PAD = bytes(b ^ 0x36 for b in range(256))
_OUTER_PAD = bytes(b ^ 0x5C for b in range(256))


def _hs256(secret: str, signed: bytes) -> bytes | None:
    """HMAC-SHA256 of `signed` under the secret as PyJWT keys it (None: PyJWT refuses it)."""
    pads = _hmac_pads(secret)
    if pads is None:
        return None
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(signed)
    outer.update(inner.digest())
    return cast(bytes, outer.digest())


def _minted(secret: str, token: str) -> _MintedClaims | None:
    """The claims of a token in the plain shape livesell mints, checked with a fraction of
    PyJWT's work: a known header segment, the HMAC-SHA256 of the first two segments equal to
    the third in canonical base64url, JSON claims among sub, roles, iat, nbf and exp (the
    times integers) that PyJWT's checks accept. None for any other token, valid or not:
    PyJWT then decides, with its own reasons. It accepts nothing PyJWT would refuse."""
    if not token.isascii():
        return None
    header, _, rest = token.partition(".")
    payload, dot, signature = rest.partition(".")
    if header not in _MINTED_HEADERS or not dot or "." in signature:
        return None
    mac = _hs256(secret, token[: len(header) + 1 + len(payload)].encode("ascii"))
    if mac is None or not hmac.compare_digest(
        base64.urlsafe_b64encode(mac).rstrip(b"="), signature.encode("ascii")
    ):
        return None
    try:
        claims = _decode_minted(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:  # binascii.Error, msgspec.DecodeError and ValidationError are ones
        return None
    now = time.time()
    if (claims.iat is not msgspec.UNSET and claims.iat > now + LEEWAY_S) or (
        claims.nbf is not msgspec.UNSET and claims.nbf > now + LEEWAY_S
    ):
        return None
    if claims.exp is not msgspec.UNSET and claims.exp <= now - LEEWAY_S:
        return None
    return claims


def _minted_claims(secret: str, token: str) -> dict[str, Any] | None:
    """`_minted`'s claims as the dict PyJWT decodes them into (to compare the two)."""
    claims = _minted(secret, token)
    if claims is None:
        return None
    return {
        name: value
        for name, value in msgspec.structs.asdict(claims).items()
        if value is not msgspec.UNSET
    }


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'", reason="malformed")
    return token.strip()


def authorize(principal: Principal | None, roles: Iterable[str] | None = None) -> Principal:
    """Require a principal, and (when given) one of `roles`."""
    if principal is None:
        raise Unauthorized("this route needs a bearer token")
    if roles is not None:
        roles = tuple(roles)
        if not principal.has_any(roles):
            raise Forbidden(f"this route needs one of the roles: {', '.join(roles)}")
    return principal
