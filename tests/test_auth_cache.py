"""Verified tokens are remembered, but a remembered token is refused exactly when a full check
would refuse it, and nothing that failed a check is ever let through."""

from __future__ import annotations

import asyncio
import time

import httpx
import jwt
import pytest

from core import auth
from core.auth import VerifiedTokens, mint_token, verify_token
from core.errors import Unauthorized
from core.settings import Settings

SECRET = "auth-cache-secret-0123456789abcdef0123"


def test_a_remembered_token_expires_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "LEEWAY_S", 0)
    token = mint_token(SECRET, "bob", ["viewer"], ttl_s=1)
    assert verify_token(SECRET, token).user_id == "bob"
    assert auth.verified_tokens.get(SECRET, token) is not None  # remembered
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(Unauthorized) as refused:
        verify_token(SECRET, token)
    assert refused.value.details["reason"] == "expired"
    assert auth.verified_tokens.get(SECRET, token) is None


def test_tampered_and_foreign_tokens_are_refused_even_next_to_a_remembered_one() -> None:
    token = mint_token(SECRET, "bob", ["viewer"])
    assert verify_token(SECRET, token).roles == frozenset({"viewer"})
    header, payload, signature = token.split(".")
    admin = mint_token("another-secret-0123456789abcdef01234", "bob", ["admin"])
    forged = f"{header}.{admin.split('.')[1]}.{signature}"  # bob's signature, admin's claims
    flipped = f"{header}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}"
    for bad in (forged, flipped, forged, flipped):  # twice: a failure is not remembered
        with pytest.raises(Unauthorized):
            verify_token(SECRET, bad)
    # a token remembered under one secret means nothing under another
    with pytest.raises(Unauthorized):
        verify_token("rotated-secret-0123456789abcdef012345", token)
    assert verify_token(SECRET, token).user_id == "bob"


def test_the_memory_is_a_bounded_lru() -> None:
    memory = VerifiedTokens(max_entries=3)
    who = auth.Principal(user_id="x", roles=frozenset())
    for name in ("a", "b", "c"):
        memory.put(SECRET, name, who, None)
    assert memory.get(SECRET, "a") is who  # used: now the most recent
    memory.put(SECRET, "d", who, None)
    assert len(memory) == 3
    assert memory.get(SECRET, "b") is None  # the least recently used went
    assert all(memory.get(SECRET, name) is who for name in ("a", "c", "d"))
    memory.put(SECRET, "e", who, time.time() - auth.LEEWAY_S - 1)
    assert memory.get(SECRET, "e") is None  # an expired entry is never served


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
