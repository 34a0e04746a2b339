"""Unguessable, unforgeable link codes and signed anonymous-visitor ids.

A link code is 14 random base62 characters (~83 bits) followed by an 8-character base62 HMAC tag
of the random part under the deployment secret. A code that fails the tag check is refused
without touching the database, so guessing costs nothing but a hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_CHARS = 14
TAG_CHARS = 8
CODE_CHARS = RANDOM_CHARS + TAG_CHARS
VISITOR_ID_CHARS = 22
_ALLOWED = frozenset(ALPHABET)


def _base62(data: bytes, width: int) -> str:
    number = int.from_bytes(data, "big")
    out = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        out.append(ALPHABET[digit])
    return "".join(out)


def _tag(secret: str, purpose: bytes, body: str) -> str:
    digest = hmac.new(secret.encode(), purpose + body.encode(), hashlib.sha256).digest()
    return _base62(digest[:12], TAG_CHARS)


def _random(chars: int) -> str:
    # 8 random bits per character leave ample headroom over log2(62) ≈ 5.95 bits per character
    return _base62(secrets.token_bytes(chars), chars)


def new_link_code(secret: str) -> str:
    body = _random(RANDOM_CHARS)
    return body + _tag(secret, b"link:", body)


def link_code_is_authentic(secret: str, code: str) -> bool:
    if len(code) != CODE_CHARS or not _ALLOWED.issuperset(code):
        return False
    body, tag = code[:RANDOM_CHARS], code[RANDOM_CHARS:]
    return hmac.compare_digest(tag, _tag(secret, b"link:", body))


def new_visitor_cookie(secret: str) -> tuple[str, str]:
    """(visitor id, cookie value) for a browser we have not seen before."""
    visitor = _random(VISITOR_ID_CHARS)
    return visitor, f"{visitor}.{_tag(secret, b'visitor:', visitor)}"


def visitor_from_cookie(secret: str, value: str | None) -> str | None:
    """The visitor id of an authentic `ls_vid` cookie, else None."""
    if not value or len(value) != VISITOR_ID_CHARS + 1 + TAG_CHARS:
        return None
    visitor, _, tag = value.partition(".")
    if len(visitor) != VISITOR_ID_CHARS or not _ALLOWED.issuperset(visitor):
        return None
    return visitor if hmac.compare_digest(tag, _tag(secret, b"visitor:", visitor)) else None
