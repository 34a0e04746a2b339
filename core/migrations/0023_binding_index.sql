-- The binding lookup (attribution_binding, since 0040) finds a buyer's entries through a link
-- or a referral code: `distributor_id IS NOT NULL`, which 0004's partial index on `link_id IS
-- NOT NULL` cannot serve. Without this index each order scanned the room's entries (0.8 ms per
-- order at 6,000 entries, growing with the room: load_tests/attribution.py).
CREATE INDEX room_entries_binding_any_idx ON room_entries (user_id, room_id, created_at)
    WHERE distributor_id IS NOT NULL AND user_id IS NOT NULL;
