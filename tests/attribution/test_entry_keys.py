"""The keys an entry into a room touches: each visitor's under a hash tag of its own, so the
entries of a room with a million visitors spread over the cluster's slots instead of loading the
one slot of `{room:ID}`; the keys one script call touches share a slot."""

from __future__ import annotations

from redis.crc import key_slot

from attribution.clicks import Entry, entry_keys

SLOTS = 16384


def _entry(visitor: int, address: int) -> Entry:
    return Entry(
        room_id=42, visitor=f"v:{visitor}", source="click", client_addr=f"10.0.{address}.1"
    )


def test_a_rooms_visitors_spread_over_the_slots() -> None:
    entries = [_entry(i, i % 200) for i in range(10_000)]
    visitor_slots = {key_slot(entry_keys(e)[1].encode()) for e in entries}
    address_slots = {key_slot(entry_keys(e)[0].encode()) for e in entries}
    # 10,000 visitors over 16,384 slots: about 7,200 distinct slots expected, never one
    assert len(visitor_slots) > 6000
    assert len(address_slots) > 150
    room_slot = key_slot(b"{room:42}")
    share = sum(key_slot(entry_keys(e)[1].encode()) == room_slot for e in entries)
    assert share < 10


def test_a_visitors_keys_share_a_slot() -> None:
    for i in range(100):
        _, counter, last = entry_keys(_entry(i, 0))
        assert key_slot(counter.encode()) == key_slot(last.encode())
