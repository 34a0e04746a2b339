-- Flash drops and orders. PostgreSQL is the authority for stock; Redis only gates in front.
CREATE TABLE drops (
    id                bigserial PRIMARY KEY,
    room_id           bigint NOT NULL REFERENCES rooms(id),
    product_id        bigint NOT NULL REFERENCES products(id),
    price_cents       bigint NOT NULL CHECK (price_cents >= 0),
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 100000),
    per_buyer_limit   integer NOT NULL CHECK (per_buyer_limit >= 1),
    starts_at         timestamptz NOT NULL,
    ends_at           timestamptz NOT NULL CHECK (ends_at > starts_at),
    closed_at         timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX drops_room_idx ON drops (room_id, starts_at DESC);

-- The columns up to `refunded_at` are read by attribution (settlement); keep their meaning.
CREATE TABLE orders (
    id                bigserial PRIMARY KEY,
    drop_id           bigint NOT NULL REFERENCES drops(id),
    room_id           bigint NOT NULL REFERENCES rooms(id),
    product_id        bigint NOT NULL REFERENCES products(id),
    buyer_id          text NOT NULL,
    quantity          integer NOT NULL CHECK (quantity >= 1),
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents >= 0),
    amount_cents      bigint NOT NULL CHECK (amount_cents = unit_price_cents * quantity),
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
    CHECK (status IN ('held', 'expired') OR paid_at IS NOT NULL),
    CHECK (status <> 'delivered' OR delivered_at IS NOT NULL)
);
CREATE INDEX orders_buyer_idx ON orders (buyer_id);
CREATE INDEX orders_hold_idx ON orders (hold_expires_at) WHERE status = 'held';
CREATE INDEX orders_delivered_idx ON orders (delivered_at) WHERE status = 'delivered';
