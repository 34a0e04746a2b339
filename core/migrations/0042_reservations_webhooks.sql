-- Reservations of scheduled rooms, and the outbound webhooks' durable outbox.

-- A viewer's reservation of a room (one per viewer and room). The entry it was recorded with
-- binds attribution like a click (room_entries source `reserve`).
CREATE TABLE room_reservations (
    room_id      bigint NOT NULL REFERENCES rooms(id),
    user_id      text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- set in the go-live transaction that notified the reserver
    notified_at  timestamptz,
    PRIMARY KEY (room_id, user_id)
);

-- Endpoints an operator registered: livesell POSTs each event they subscribe to, signed with
-- their own secret.
CREATE TABLE webhook_endpoints (
    id          bigserial PRIMARY KEY,
    url         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    events      text[] NOT NULL CHECK (cardinality(events) >= 1),
    secret      text NOT NULL CHECK (length(secret) >= 32),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per (event, endpoint), written in the transaction of the fact it
-- announces, so a committed fact's notification exists even if the process dies right after.
-- The worker delivers due rows, retrying with exponential backoff until `give_up_at`.
CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    endpoint_id      bigint NOT NULL REFERENCES webhook_endpoints(id),
    event            text NOT NULL,
    -- the event's id, the same for every endpoint it goes to (receivers deduplicate by it)
    event_id         text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    give_up_at       timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CHECK ((status = 'delivered') = (delivered_at IS NOT NULL)),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);
