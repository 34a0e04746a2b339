-- Distributors, their tracked room links, room entries (clicks) and per-order attribution.
--
-- Single level (一级分销) is a property of the schema: a distributor row has no parent, upline,
-- referrer or level column, and an order is credited through `order_attributions`, whose primary
-- key is the order id, so one order line can name at most one distributor.

CREATE TABLE distributors (
    id          bigserial PRIMARY KEY,
    user_id     text NOT NULL UNIQUE CHECK (length(user_id) BETWEEN 1 AND 128),
    team        text CHECK (team IS NULL OR length(team) BETWEEN 1 AND 64),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A share link into a room (optionally landing on a product). `code` is random plus an HMAC tag
-- of the secret, so codes cannot be guessed or forged; one link per (distributor, room, product).
CREATE TABLE links (
    id              bigserial PRIMARY KEY,
    code            text NOT NULL UNIQUE CHECK (length(code) BETWEEN 16 AND 64),
    distributor_id  bigint NOT NULL REFERENCES distributors(id),
    room_id         bigint NOT NULL REFERENCES rooms(id),
    product_id      bigint REFERENCES products(id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (distributor_id, room_id, product_id)
);

-- Every entry into a room: a link click (`GET /l/{code}`), an app entry through a link, or a
-- plain entry with no link (a visit that earns no credit). `visitor` is `u:<user id>` for a known
-- user and `v:<random id>` for an anonymous browser; `user_id` is set only for known users, and
-- only those entries can bind an order.
CREATE TABLE room_entries (
    id              bigserial PRIMARY KEY,
    room_id         bigint NOT NULL REFERENCES rooms(id),
    link_id         bigint REFERENCES links(id),
    distributor_id  bigint REFERENCES distributors(id),
    visitor         text NOT NULL CHECK (length(visitor) BETWEEN 3 AND 140),
    user_id         text CHECK (user_id IS NULL OR length(user_id) BETWEEN 1 AND 128),
    source          text NOT NULL CHECK (source IN ('click', 'enter')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((link_id IS NULL) = (distributor_id IS NULL))
);
-- binding: the buyer's link entries into a room, in time order
CREATE INDEX room_entries_binding_idx ON room_entries (user_id, room_id, created_at)
    WHERE link_id IS NOT NULL AND user_id IS NOT NULL;
CREATE INDEX room_entries_distributor_idx ON room_entries (distributor_id) WHERE link_id IS NOT NULL;

-- The attribution snapshot of an order, decided once when the order is created and never
-- changed afterwards: which distributor (none when no link bound the buyer), through which entry,
-- under which rule, at which commission rate.
CREATE TABLE order_attributions (
    order_id        bigint PRIMARY KEY REFERENCES orders(id),
    room_id         bigint NOT NULL REFERENCES rooms(id),
    buyer_id        text NOT NULL,
    distributor_id  bigint REFERENCES distributors(id),
    entry_id        bigint REFERENCES room_entries(id),
    rule            text NOT NULL CHECK (rule IN ('last', 'first', 'none')),
    commission_bps  integer NOT NULL CHECK (commission_bps BETWEEN 0 AND 10000),
    self_referral   boolean NOT NULL DEFAULT false,
    decided_at      timestamptz NOT NULL DEFAULT now(),
    -- credited exactly when an entry bound the buyer, and then under a real rule
    CHECK ((distributor_id IS NULL) = (entry_id IS NULL)),
    CHECK ((distributor_id IS NULL) = (rule = 'none')),
    CHECK (distributor_id IS NOT NULL OR NOT self_referral),
    -- target of the ledger's (order, distributor) reference: postings for an order can only
    -- ever go to the one distributor this row credits
    UNIQUE (order_id, distributor_id)
);
CREATE INDEX order_attributions_distributor_idx ON order_attributions (distributor_id)
    WHERE distributor_id IS NOT NULL;
CREATE INDEX order_attributions_room_idx ON order_attributions (room_id, distributor_id)
    WHERE distributor_id IS NOT NULL AND NOT self_referral;

-- The snapshot is immutable: later rate changes, team changes or new clicks never rewrite it.
-- (TRUNCATE stays possible for operators and test fixtures; it is not a row change.)
CREATE FUNCTION order_attributions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_attributions rows are immutable (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER order_attributions_no_change
    BEFORE UPDATE OR DELETE ON order_attributions
    FOR EACH ROW EXECUTE FUNCTION order_attributions_immutable();

-- What moved since dashboards and leaderboards were last published: money and click changes
-- append a mark in their own transaction; the refresher takes marks in batches, recomputes each
-- distributor's dashboard and each room's leaderboard once, and publishes the latest values.
-- Plain inserts, no uniqueness: concurrent payments never wait on each other's marks.
CREATE TABLE attribution_dirty (
    id      bigserial PRIMARY KEY,
    kind    text NOT NULL CHECK (kind IN ('dashboard', 'leaderboard')),
    target  bigint NOT NULL   -- distributor id for a dashboard, room id for a leaderboard
);
