-- Products hosts sell. Prices are integer cents; commission rates basis points.
CREATE TABLE products (
    id              bigserial PRIMARY KEY,
    sku             text NOT NULL UNIQUE CHECK (length(sku) BETWEEN 1 AND 64),
    title           text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    price_cents     bigint NOT NULL CHECK (price_cents >= 0),
    commission_bps  integer NOT NULL CHECK (commission_bps BETWEEN 0 AND 10000),
    image_url       text CHECK (image_url IS NULL OR length(image_url) <= 2000),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
