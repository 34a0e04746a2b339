"""JWT auth: HS256 tokens with `sub` and `roles`, minted by the integrating app (or locally)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

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
    try:
        # algorithms pinned: a token claiming `none` or RS256 is refused, never trusted
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub"]}, leeway=LEEWAY_S
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired", reason="expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("token not yet valid", reason="not_yet_valid") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}", reason="invalid") from None
    sub = claims.get("sub")
    # user ids are stored as text: printable only (PostgreSQL refuses NUL, logs hate controls)
    if not isinstance(sub, str) or not sub or len(sub) > 128 or not sub.isprintable():
        raise Unauthorized(
            "invalid token: sub must be 1 to 128 printable characters", reason="invalid"
        )
    raw_roles = claims.get("roles", [])
    if isinstance(raw_roles, str):
        raw_roles = [raw_roles]
    if not isinstance(raw_roles, list):
        raise Unauthorized("invalid token: roles must be a list", reason="invalid")
    roles = frozenset(r for r in raw_roles if isinstance(r, str) and r in ROLES)
    who = Principal(user_id=sub, roles=roles)
    verified_tokens.put(secret, token, who, claims.get("exp"))
    return who


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
