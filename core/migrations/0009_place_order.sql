-- A gate winner's held order in one round trip.
--
-- storefront_place_order does in one statement what a buy's transaction did in four: check the
-- drop still sells (FOR SHARE: a concurrent close waits for this sale, or this sale sees it
-- closed), insert the order, claim its units (the one-live-claim index refuses a unit someone
-- holds), count them against the buyer's quota (the CHECK refuses going over the limit), credit
-- the order through attribution_credit_order, and store the 201 response under the buyer's
-- Idempotency-Key (the primary key refuses a key already used). It adds no rule of its own: a
-- constraint it trips aborts the whole statement, and the caller tells which by its name.
--
-- placed_outcome is 'placed' (with the order and the stored response), 'missing' (no such drop),
-- or the status of a drop that no longer sells ('closed', 'scheduled', 'ended': nothing written).

-- A timestamp as the API's JSON writes it (msgspec): UTC, microseconds only when not zero.
CREATE FUNCTION livesell_json_time(ts timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN to_char(ts AT TIME ZONE 'UTC', 'US') = '000000' THEN ''
                ELSE '.' || to_char(ts AT TIME ZONE 'UTC', 'US') END
        || 'Z'
$$;

CREATE FUNCTION storefront_place_order(
    p_drop bigint,
    p_buyer text,
    p_quantity integer,
    p_hold interval,
    p_units integer[],
    p_key text,
    p_fingerprint bytea,
    p_credit_rule text,
    p_credit_window interval,
    OUT placed_outcome text,
    OUT placed_order bigint,
    OUT placed_body bytea
) LANGUAGE plpgsql AS $$
DECLARE
    d record;
    o record;
BEGIN
    SELECT dr.id, dr.room_id, dr.product_id, dr.price_cents, dr.per_buyer_limit,
           p.commission_bps,
           dr.closed_at IS NULL AND now() >= dr.starts_at AND now() < dr.ends_at AS active,
           CASE WHEN dr.closed_at IS NOT NULL THEN 'closed'
                WHEN now() < dr.starts_at THEN 'scheduled' ELSE 'ended' END AS status
    INTO d
    FROM drops dr JOIN products p ON p.id = dr.product_id
    WHERE dr.id = p_drop
    FOR SHARE OF dr;
    IF NOT FOUND THEN
        placed_outcome := 'missing';
        RETURN;
    END IF;
    IF NOT d.active THEN
        placed_outcome := d.status;
        RETURN;
    END IF;

    INSERT INTO orders (drop_id, room_id, product_id, buyer_id, quantity, unit_price_cents,
                        amount_cents, commission_bps, hold_expires_at)
    VALUES (d.id, d.room_id, d.product_id, p_buyer, p_quantity, d.price_cents,
            d.price_cents * p_quantity, d.commission_bps, now() + p_hold)
    RETURNING id, amount_cents, hold_expires_at, created_at INTO o;
    INSERT INTO stock_claims (drop_id, unit_no, order_id)
    SELECT p_drop, unit_no, o.id FROM unnest(p_units) AS unit_no;
    INSERT INTO drop_buyers (drop_id, buyer_id, per_buyer_limit, live_units)
    VALUES (d.id, p_buyer, d.per_buyer_limit, p_quantity)
    ON CONFLICT (drop_id, buyer_id)
    DO UPDATE SET live_units = drop_buyers.live_units + EXCLUDED.live_units;
    PERFORM attribution_credit_order(p_buyer, d.room_id, o.created_at - p_credit_window,
                                     o.created_at, o.id, p_credit_rule, d.commission_bps);

    -- the fields and their order of storefront.views.BuyResult
    placed_body := convert_to(format(
        '{"order_id":"%s","status":"held","hold_expires_at":"%s","amount_cents":%s}',
        o.id, livesell_json_time(o.hold_expires_at), o.amount_cents), 'UTF8');
    INSERT INTO idempotency_keys (buyer_id, key, fingerprint, drop_id, order_id,
                                  response_status, response_body)
    VALUES (p_buyer, p_key, p_fingerprint, p_drop, o.id, 201, placed_body);
    placed_outcome := 'placed';
    placed_order := o.id;
END $$;
