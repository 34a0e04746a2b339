"""Verified tokens are remembered, but a remembered token is refused exactly when a full check
would refuse it, and nothing that failed a check is ever let through."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from core import auth
from core.auth import TokenVerifier, mint_token
from core.errors import Unauthorized
from core.settings import Settings

SECRET = "auth-cache-secret-0123456789abcdef0123"


def test_a_remembered_token_expires_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "LEEWAY_S", 0)
    tokens = TokenVerifier(SECRET)
    token = mint_token(SECRET, "bob", ["viewer"], ttl_s=1)
    assert tokens.verify(token).user_id == "bob"
    assert len(tokens) == 1  # remembered
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(Unauthorized) as refused:
        tokens.verify(token)
    assert refused.value.details["reason"] == "expired"
    assert len(tokens) == 0


def test_tampered_and_foreign_tokens_are_refused_even_next_to_a_remembered_one() -> None:
    tokens = TokenVerifier(SECRET)
    token = mint_token(SECRET, "bob", ["viewer"])
    assert tokens.verify(token).roles == frozenset({"viewer"})
    header, payload, signature = token.split(".")
    admin = mint_token("another-secret-0123456789abcdef01234", "bob", ["admin"])
    forged = f"{header}.{admin.split('.')[1]}.{signature}"  # bob's signature, admin's claims
    flipped = f"{header}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}"
    none_alg = jwt.encode({"sub": "bob", "roles": ["admin"]}, None, algorithm="none")
    for bad in (forged, flipped, none_alg, forged, flipped):  # a failure is not remembered
        with pytest.raises(Unauthorized):
            tokens.verify(bad)
    assert len(tokens) == 1
    # a token remembered by one secret's verifier means nothing to another's
    with pytest.raises(Unauthorized):
        TokenVerifier("rotated-secret-0123456789abcdef012345").verify(token)
    assert tokens.verify(token).user_id == "bob"


def test_the_memory_is_a_bounded_lru() -> None:
    tokens = TokenVerifier(SECRET, max_entries=3)
    minted = {name: mint_token(SECRET, name, ["viewer"]) for name in "abcde"}
    for name in "abc":
        tokens.verify(minted[name])
    tokens.verify(minted["a"])  # used: now the most recent
    tokens.verify(minted["d"])
    assert len(tokens) == 3
    remembered = list(tokens._entries)
    assert remembered == [minted["c"], minted["a"], minted["d"]], "the least recently used went"


async def test_routes_refuse_an_expired_token_they_accepted_before(
    client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "LEEWAY_S", 0)
    token = mint_token(settings.secret, "hana", ["host"], ttl_s=1)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"sku": "T-1", "title": "t", "price_cents": 100, "commission_bps": 0}
    assert (await client.post("/api/products", json=body, headers=headers)).status_code == 201
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)
    again = await client.post("/api/products", json={**body, "sku": "T-2"}, headers=headers)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "unauthorized"
