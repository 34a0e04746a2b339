-- Indexes behind the listing routes and the link-click hand-over.

-- a host's own products, newest first (`GET /api/products?mine=1`)
CREATE INDEX products_created_by_idx ON products (created_by, id);

-- a distributor's links, newest first (`GET /api/distributors/me/links`)
CREATE INDEX links_distributor_created_idx ON links (distributor_id, id);

-- an anonymous browser's latest click into a room, which the signed-in entry that follows it
-- from the same browser takes over instead of counting the person twice
CREATE INDEX room_entries_anonymous_idx ON room_entries (room_id, visitor, created_at)
    WHERE user_id IS NULL;

-- who an entry is: a signed-in user's entries are `u:<user id>`, an anonymous browser's `v:<id>`;
-- a click handed over to a user becomes wholly theirs, so visitors count people, not devices
ALTER TABLE room_entries ADD CONSTRAINT room_entries_visitor_matches_user
    CHECK (CASE WHEN user_id IS NULL THEN visitor LIKE 'v:%' ELSE visitor = 'u:' || user_id END);
