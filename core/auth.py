"""JWT auth: HS256 tokens with `sub` and `roles`, minted by the integrating app (or locally)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import jwt
import msgspec

from core.errors import Forbidden, Unauthorized

ROLES = frozenset({"host", "viewer", "distributor", "admin"})
ALGORITHM = "HS256"


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


def verify_token(secret: str, token: str) -> Principal:
    """Decode and check a token; any defect is Unauthorized with the reason."""
    try:
        # algorithms pinned: a token claiming `none` or RS256 is refused, never trusted
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub"]}, leeway=5
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
    return Principal(user_id=sub, roles=roles)


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
