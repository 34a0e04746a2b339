-- Live rooms. A room belongs to one host; status only moves forward.
CREATE TABLE rooms (
    id                  bigserial PRIMARY KEY,
    host_id             text NOT NULL,
    title               text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    status              text NOT NULL DEFAULT 'scheduled'
                        CHECK (status IN ('scheduled', 'live', 'ended')),
    pinned_product_id   bigint REFERENCES products(id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    live_at             timestamptz,
    ended_at            timestamptz,
    CHECK (status <> 'live' OR live_at IS NOT NULL),
    CHECK (status <> 'ended' OR ended_at IS NOT NULL)
);
CREATE INDEX rooms_host_idx ON rooms (host_id);
