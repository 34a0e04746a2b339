"""What the early buy answerer remembers between attempts stays bounded, and what it remembers
decodes as the route decodes."""

from __future__ import annotations

import pytest

from core.errors import LivesellError
from storefront import hot_path


def test_authorization_headers_are_remembered_only_when_short() -> None:
    hot_path._remembered_bearer.cache_clear()
    token = "t" * 200
    assert hot_path._bearer(b"Bearer " + token.encode()) == token
    assert hot_path._bearer(b"Bearer " + token.encode()) == token
    info = hot_path._remembered_bearer.cache_info()
    assert (info.hits, info.currsize) == (1, 1)
    long = "x" * hot_path.REMEMBERED_HEADER_MAX
    assert hot_path._bearer(b"Bearer " + long.encode()) == long
    assert hot_path._remembered_bearer.cache_info().currsize == 1, "a long header is not kept"


def test_a_malformed_header_is_refused_every_time_and_never_remembered() -> None:
    hot_path._remembered_bearer.cache_clear()
    for _ in range(2):
        with pytest.raises(LivesellError):
            hot_path._bearer(b"Basic abc")
    assert hot_path._remembered_bearer.cache_info().currsize == 0


def test_a_remembered_body_decodes_as_the_route_decodes() -> None:
    assert hot_path._quantity(b'{"quantity": 2}') == 2
    assert hot_path._quantity(b"  ") == 1  # an empty body is `{}`: the default quantity
    for bad in (b'{"quantity": 0}', b'{"quantity": "1"}', b"[", b'{"quantity": 1, "x": 1}'):
        with pytest.raises(LivesellError):
            hot_path._quantity(bad)
