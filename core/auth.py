"""JWT auth: HS256 tokens with `sub` and `roles`, minted by the integrating app (or locally)."""

from __future__ import annotations

import functools
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Annotated, Any, TypeGuard

import jwt
import msgspec

from core.errors import Forbidden, Unauthorized

ROLES = frozenset({"host", "viewer", "distributor", "admin"})
ALGORITHM = "HS256"
# seconds of clock skew tolerated on exp / nbf / iat
LEEWAY_S = 5
# verified tokens remembered per process; a flash-sale storm repeats each buyer's token many
# times, and an HMAC check plus JSON decode costs tens of µs per request
VERIFIED_TOKENS_MAX = 10_000
# A user id is the `sub` of the user's token, chosen by the integrating app: 1 to 128 characters,
# none of them a control character (PostgreSQL refuses NUL; logs and terminals mangle the rest).
USER_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)"
USER_ID_MAX = 128
UserId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=USER_ID_MAX,
        pattern=USER_ID_PATTERN,
        description="a user id: the `sub` of that user's token",
    ),
]
_USER_ID = re.compile(USER_ID_PATTERN)


def is_user_id(raw: object) -> TypeGuard[str]:
    return isinstance(raw, str) and len(raw) <= USER_ID_MAX and _USER_ID.search(raw) is not None


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
    if not is_user_id(sub):
        raise ValueError("sub must be 1 to 128 characters, none of them a control character")
    now = int(time.time())
    claims = {"sub": sub, "roles": roles, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenVerifier:
    """Verifies bearer tokens for one secret with PyJWT, remembering those that passed.

    A flash-sale storm repeats each buyer's token many times, and PyJWT's checks cost several µs
    per request, so successes are kept in a bounded LRU keyed by the token string, with their
    `exp`: a hit re-checks it, so a remembered token stops working at the same moment a full
    verification would refuse it. Failures are never remembered. One per process
    (`Resources.tokens`)."""

    def __init__(self, secret: str, max_entries: int = VERIFIED_TOKENS_MAX) -> None:
        self.secret = secret
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float | None, Principal]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(self, token: str) -> Principal:
        """The token's principal; any defect is Unauthorized with the reason."""
        entry = self._entries.get(token)
        if entry is not None:
            expires_at, who = entry
            if expires_at is None or time.time() < expires_at:
                self._entries.move_to_end(token)
                return who
            del self._entries[token]
        claims = _decoded_claims(self.secret, token)
        who = _principal(claims.get("sub"), claims.get("roles", []))
        exp = claims.get("exp")
        # PyJWT refuses once `exp <= now - leeway`
        expires_at = float(exp) + LEEWAY_S if isinstance(exp, int | float) else None
        self._entries[token] = (expires_at, who)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return who

    def forget(self) -> None:
        """Verify every token afresh from now on."""
        self._entries.clear()


def verify_token(secret: str, token: str) -> Principal:
    """Decode and check a token with nothing remembered (the command line, tests); servers use
    their TokenVerifier."""
    claims = _decoded_claims(secret, token)
    return _principal(claims.get("sub"), claims.get("roles", []))


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
    if not is_user_id(sub):
        raise Unauthorized(
            "invalid token: sub must be 1 to 128 characters, none of them a control character",
            reason="invalid",
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
