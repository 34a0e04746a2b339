"""Bodies and queries decode as the document says: malformed JSON is a 400 even after a
number the typed decode refused first, and a query's text is never read as a null or as a
number of seconds."""

from __future__ import annotations

import httpx
import pytest

from core.errors import BadRequest, Unprocessable
from core.http import decode_json
from storefront.payments import PaymentEvent
from tests.storefront.conftest import Auth


def test_malformed_json_behind_a_refused_number_is_a_bad_request() -> None:
    # the typed decode stops at the float (a string is expected), before the malformed byte
    for body in (b'{"provider": 3.5e16, "id": \xfd', b'{"provider": 3.0, "x": \xfd'):
        with pytest.raises(BadRequest):
            decode_json(body, PaymentEvent)


async def test_query_text_is_not_a_null_or_a_timestamp(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    admin = auth("ops", "admin")
    for query in ("to=null", "to=0.5", "from=1700000000"):
        response = await client.get(f"/api/admin/community?{query}", headers=admin)
        assert response.status_code == 422, (query, response.text)
        assert response.json()["error"]["field"] == query.split("=")[0]
    ok = await client.get("/api/admin/community?from=2026-01-01T00:00:00Z", headers=admin)
    assert ok.status_code == 200, ok.text


def test_unprocessable_is_the_refusal_of_a_wrong_type() -> None:
    with pytest.raises(Unprocessable):
        decode_json(b'{"id": 1}', PaymentEvent)
