"""The quick check of minted tokens (core.auth._minted_claims) accepts nothing PyJWT refuses
and gives the claims PyJWT gives; everything else is left to PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from typing import Any

import jwt

from core import auth
from core.auth import LEEWAY_S, mint_token, verify_token

SECRET = "minted-token-secret-0123456789abcdef0123"


def pyjwt_claims(token: str, secret: str = SECRET) -> dict[str, Any] | None:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub"]}, leeway=LEEWAY_S
        )
    except jwt.InvalidTokenError:
        return None
    return claims


def signed(claims: dict[str, Any], header: dict[str, Any] | None = None, **kw: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm=kw.pop("algorithm", "HS256"), headers=header)


def by_hand(header: bytes, claims: bytes, secret: str = SECRET) -> str:
    """A token whose segments are exactly these bytes, signed with HS256."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing = f"{b64(header)}.{b64(claims)}"
    mac = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(mac)}"


def agrees_with_pyjwt(token: str, secret: str = SECRET) -> dict[str, Any] | None:
    quick = auth._minted_claims(secret, token)
    reference = pyjwt_claims(token, secret)
    if quick is not None:
        assert reference is not None, f"accepted what PyJWT refuses: {token!r}"
        assert quick == reference
    return quick


def test_a_minted_token_is_read_by_the_quick_check_as_pyjwt_reads_it() -> None:
    token = mint_token(SECRET, "张三", ["viewer", "distributor"])
    claims = agrees_with_pyjwt(token)
    assert claims is not None and claims["sub"] == "张三"
    auth.verified_tokens.clear()
    who = verify_token(SECRET, token)
    assert who.user_id == "张三" and who.roles == frozenset({"viewer", "distributor"})


def test_tokens_outside_the_minted_shape_are_left_to_pyjwt() -> None:
    now = int(time.time())
    base = {"sub": "bob", "roles": ["viewer"], "iat": now, "exp": now + 600}
    left_to_pyjwt = {
        "expired": {**base, "exp": now - LEEWAY_S - 1},
        "expires at the leeway's edge": {**base, "exp": now - LEEWAY_S},
        "issued in the future": {**base, "iat": now + LEEWAY_S + 60},
        "not yet valid": {**base, "nbf": now + LEEWAY_S + 60},
        "exp null": {**base, "exp": None},
        "exp a float": {**base, "exp": now + 600.5},
        "exp a string": {**base, "exp": str(now + 600)},
        "iat a bool": {**base, "iat": True},
        "an audience": {**base, "aud": "shop"},
        "an issuer": {**base, "iss": "someone"},
        "no sub": {k: v for k, v in base.items() if k != "sub"},
        "sub a number": {**base, "sub": 42},
    }
    for what, claims in left_to_pyjwt.items():
        token = signed(claims)
        assert auth._minted_claims(SECRET, token) is None, what
        agrees_with_pyjwt(token)
    # other algorithms, headers and encodings
    others = [
        jwt.encode(base, SECRET * 2, algorithm="HS512"),
        signed(base, header={"kid": "k1"}),
        jwt.encode(base, key=None, algorithm="none"),  # type: ignore[arg-type]
        by_hand(b'{"alg":"none","typ":"JWT"}', json.dumps(base).encode()),
        by_hand(b'{"alg":"HS256","typ":"JWT"}', b"not json"),
        by_hand(b'{"alg":"HS256","typ":"JWT"}', b'["a list"]'),
        mint_token(SECRET, "bob", ["viewer"]) + "=",
        mint_token(SECRET, "bob", ["viewer"]) + ".x",
        mint_token("another-secret-0123456789abcdef01234567", "bob", ["admin"]),
    ]
    for token in others:
        assert auth._minted_claims(SECRET, token) is None, token
        agrees_with_pyjwt(token)
    # header member order and a header without typ are minted shapes too
    for header in (b'{"typ":"JWT","alg":"HS256"}', b'{"alg":"HS256"}'):
        token = by_hand(header, json.dumps(base).encode())
        assert agrees_with_pyjwt(token) == base


def test_no_mutation_of_a_token_gets_past_the_quick_check_alone() -> None:
    token = mint_token(SECRET, "bob", ["viewer"])
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=é"
    for _ in range(3_000):
        chars = list(token)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars))
            match rng.randrange(3):
                case 0:
                    chars[at] = rng.choice(alphabet)
                case 1:
                    del chars[at]
                case _:
                    chars.insert(at, rng.choice(alphabet))
        mutated = "".join(chars)
        if agrees_with_pyjwt(mutated) is not None:
            assert mutated == token, "only the token itself passes"


def test_a_secret_pyjwt_refuses_as_an_hmac_key_disables_the_quick_check() -> None:
    pem = (
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    )
    claims = json.dumps({"sub": "x", "iat": int(time.time())}).encode()
    token = by_hand(b'{"alg":"HS256","typ":"JWT"}', claims, pem)
    assert auth._hmac_key(pem) is None
    assert auth._minted_claims(pem, token) is None


def test_the_quick_hmac_is_hmac_sha256_for_keys_of_every_length() -> None:
    for secret in ("k" * 32, "k" * 63, "k" * 64, "k" * 65, "密钥" * 40, SECRET):
        key = auth._hmac_key(secret)
        assert key is not None
        for message in (b"", b"a.b", b"x" * 1000):
            assert auth._hs256(secret, message) == hmac.new(key, message, hashlib.sha256).digest()
        # and a token signed with it passes as PyJWT passes it
        token = mint_token(secret, "bob", ["viewer"])
        assert agrees_with_pyjwt(token, secret) is not None
        assert agrees_with_pyjwt(token, secret + "x") is None
