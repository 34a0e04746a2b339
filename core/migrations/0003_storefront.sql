-- Flash drops, stock claims, orders, idempotency and payments.
--
-- PostgreSQL is the authority for stock: a drop owns one row per unit, and a unit can carry at
-- most one live claim (held or sold) at a time, enforced by a partial unique index. Whatever the
-- Redis gate in front believes, a unit cannot be sold twice.

CREATE TABLE drops (
    id                  bigserial PRIMARY KEY,
    room_id             bigint NOT NULL REFERENCES rooms(id),
    product_id          bigint NOT NULL REFERENCES products(id),
    price_cents         bigint NOT NULL CHECK (price_cents >= 0),
    quantity            integer NOT NULL CHECK (quantity BETWEEN 1 AND 100000),
    per_buyer_limit     integer NOT NULL CHECK (per_buyer_limit BETWEEN 1 AND quantity),
    starts_at           timestamptz NOT NULL,
    ends_at             timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- set once by whichever worker announces `drop.started`
    started_at          timestamptz,
    -- closed by the host ('host') or by time ('ended'); either way nothing more sells
    closed_at           timestamptz,
    close_reason        text CHECK (close_reason IN ('host', 'ended')),
    -- set by whoever first sees stock reach zero (announces `drop.sold_out` once); cleared when
    -- stock comes back
    sold_out_at         timestamptz,
    CHECK ((closed_at IS NULL) = (close_reason IS NULL)),
    -- lets drop_buyers copy the limit under a foreign key, so its CHECK enforces the real limit
    UNIQUE (id, per_buyer_limit)
);
CREATE INDEX drops_room_idx ON drops (room_id, starts_at DESC);
CREATE INDEX drops_open_idx ON drops (ends_at) WHERE closed_at IS NULL;

-- One row per unit for sale, created with the drop: unit numbers 1..quantity.
CREATE TABLE drop_units (
    drop_id     bigint NOT NULL REFERENCES drops(id) ON DELETE CASCADE,
    unit_no     integer NOT NULL CHECK (unit_no >= 1),
    PRIMARY KEY (drop_id, unit_no)
);

-- How many live units each buyer holds of a drop; the CHECK is the per-buyer limit.
CREATE TABLE drop_buyers (
    drop_id          bigint NOT NULL,
    buyer_id         text NOT NULL,
    per_buyer_limit  integer NOT NULL,
    live_units       integer NOT NULL CHECK (live_units >= 0 AND live_units <= per_buyer_limit),
    PRIMARY KEY (drop_id, buyer_id),
    FOREIGN KEY (drop_id, per_buyer_limit) REFERENCES drops (id, per_buyer_limit)
);

-- The columns up to `expired_at` are read by attribution (settlement); keep their meaning.
CREATE TABLE orders (
    id                bigserial PRIMARY KEY,
    drop_id           bigint NOT NULL REFERENCES drops(id),
    room_id           bigint NOT NULL REFERENCES rooms(id),
    product_id        bigint NOT NULL REFERENCES products(id),
    buyer_id          text NOT NULL,
    quantity          integer NOT NULL CHECK (quantity >= 1),
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents >= 0),
    amount_cents      bigint NOT NULL CHECK (amount_cents = unit_price_cents * quantity),
    -- the product's rate when the order was placed
    commission_bps    integer NOT NULL CHECK (commission_bps BETWEEN 0 AND 10000),
    status            text NOT NULL DEFAULT 'held'
                      CHECK (status IN ('held', 'paid', 'delivered', 'expired', 'refunded')),
    refunded_cents    bigint NOT NULL DEFAULT 0
                      CHECK (refunded_cents BETWEEN 0 AND amount_cents),
    hold_expires_at   timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    paid_at           timestamptz,
    delivered_at      timestamptz,
    refunded_at       timestamptz,
    expired_at        timestamptz,
    -- beyond what attribution reads
    refunded_units    integer NOT NULL DEFAULT 0 CHECK (refunded_units BETWEEN 0 AND quantity),
    refund_reason     text,
    CHECK (refunded_cents = refunded_units * unit_price_cents),
    CHECK ((status = 'refunded') = (refunded_units = quantity)),
    CHECK (status IN ('held', 'expired') OR paid_at IS NOT NULL),
    CHECK (status <> 'delivered' OR delivered_at IS NOT NULL),
    CHECK (status <> 'expired' OR expired_at IS NOT NULL),
    CHECK (refunded_units = 0 OR refunded_at IS NOT NULL)
);
CREATE INDEX orders_buyer_idx ON orders (buyer_id);
CREATE INDEX orders_drop_idx ON orders (drop_id);
CREATE INDEX orders_hold_idx ON orders (hold_expires_at) WHERE status = 'held';
CREATE INDEX orders_delivered_idx ON orders (delivered_at) WHERE status = 'delivered';

-- A claim ties one unit to one order. 'held' until paid, then 'sold'; 'released' when the hold
-- expires or the unit is refunded, after which the unit may be claimed again.
CREATE TABLE stock_claims (
    id           bigserial PRIMARY KEY,
    drop_id      bigint NOT NULL,
    unit_no      integer NOT NULL,
    order_id     bigint NOT NULL REFERENCES orders(id),
    state        text NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'sold', 'released')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    CHECK ((state = 'released') = (released_at IS NOT NULL)),
    FOREIGN KEY (drop_id, unit_no) REFERENCES drop_units (drop_id, unit_no)
);
-- The no-oversell constraint: at most one live claim per unit.
CREATE UNIQUE INDEX stock_claims_one_live_per_unit
    ON stock_claims (drop_id, unit_no) WHERE state <> 'released';
CREATE INDEX stock_claims_order_idx ON stock_claims (order_id);

-- Idempotent checkout: one stored response per (buyer, key), written in the order's transaction.
CREATE TABLE idempotency_keys (
    buyer_id         text NOT NULL,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of method, path and the canonical body of the first request
    fingerprint      bytea NOT NULL CHECK (length(fingerprint) = 32),
    drop_id          bigint NOT NULL REFERENCES drops(id),
    order_id         bigint NOT NULL REFERENCES orders(id),
    response_status  integer NOT NULL,
    response_body    bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (buyer_id, key)
);
CREATE INDEX idempotency_keys_drop_idx ON idempotency_keys (drop_id);

-- A payment attempt for an order at a provider.
CREATE TABLE payments (
    id                   bigserial PRIMARY KEY,
    order_id             bigint NOT NULL REFERENCES orders(id),
    provider             text NOT NULL,
    provider_payment_id  text NOT NULL,
    amount_cents         bigint NOT NULL CHECK (amount_cents >= 0),
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'succeeded', 'failed')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    settled_at           timestamptz,
    UNIQUE (provider, provider_payment_id)
);
CREATE INDEX payments_order_idx ON payments (order_id);

-- Webhook events already processed: a provider retrying an event changes nothing.
CREATE TABLE payment_events (
    provider     text NOT NULL,
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type   text NOT NULL,
    -- as the event claims; not a foreign key, so a bogus event is still recorded as seen
    order_id     bigint,
    outcome      text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);

-- Every refund, full or partial, with who asked and why.
CREATE TABLE refunds (
    id            bigserial PRIMARY KEY,
    order_id      bigint NOT NULL REFERENCES orders(id),
    units         integer NOT NULL CHECK (units >= 1),
    amount_cents  bigint NOT NULL CHECK (amount_cents >= 0),
    reason        text NOT NULL,
    requested_by  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_order_idx ON refunds (order_id);
