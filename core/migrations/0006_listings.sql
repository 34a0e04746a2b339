-- Indexes behind the listing routes and the link-click hand-over.

-- a host's own products, newest first (`GET /api/products?mine=1`)
CREATE INDEX products_created_by_idx ON products (created_by, id);

-- a distributor's links, newest first (`GET /api/distributors/me/links`)
CREATE INDEX links_distributor_created_idx ON links (distributor_id, id);

-- an anonymous browser's latest click into a room, which the signed-in entry that follows it
-- from the same browser takes over instead of counting the person twice
CREATE INDEX room_entries_anonymous_idx ON room_entries (room_id, visitor, created_at)
    WHERE user_id IS NULL;
