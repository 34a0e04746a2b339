-- A winner's order answers with columns, and its refusals with what they mean.
--
-- storefront_place_order (0009) built the 201 body itself with format(), imitating the API's
-- JSON, and storefront_place_orders (0010) reported a refusal by the name of the constraint that
-- tripped, for the caller to compare as a string. Now the response's fields are columns (the API
-- renders them with the same encoder as every other response), stored on the Idempotency-Key's
-- row in typed form so a replay renders the same bytes, and a refusal is one of the outcomes
-- below, decided here where the constraints are known:
--
--   placed      the order, its claims, quota, attribution and Idempotency-Key are written
--   missing     no such drop
--   scheduled · closed · ended   the drop does not sell now (nothing written)
--   key_taken   the buyer's Idempotency-Key was used meanwhile (idempotency_keys_pkey)
--   unit_taken  a unit already has a live claim (stock_claims_one_live_per_unit)
--   over_limit  the buyer's live units would pass the drop's limit (drop_buyers' CHECK)
--
-- Any other error aborts the whole batch, as before.

ALTER TABLE idempotency_keys
    ADD COLUMN hold_expires_at timestamptz,
    ADD COLUMN amount_cents bigint;
UPDATE idempotency_keys AS k SET hold_expires_at = o.hold_expires_at, amount_cents = o.amount_cents
FROM orders AS o WHERE o.id = k.order_id;
ALTER TABLE idempotency_keys
    ALTER COLUMN hold_expires_at SET NOT NULL,
    ALTER COLUMN amount_cents SET NOT NULL,
    DROP COLUMN response_body;

DROP FUNCTION storefront_place_orders(bigint[], text[], integer[], integer[], text[], bytea[],
                                      interval, text, interval);
DROP FUNCTION storefront_place_order(bigint, text, integer, interval, integer[], text, bytea,
                                     text, interval);
DROP FUNCTION livesell_json_time(timestamptz);

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
    OUT order_id bigint,
    OUT hold_expires_at timestamptz,
    OUT amount_cents bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
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
    RETURNING id, orders.amount_cents, orders.hold_expires_at, created_at INTO o;
    INSERT INTO stock_claims (drop_id, unit_no, order_id)
    SELECT p_drop, unit_no, o.id FROM unnest(p_units) AS unit_no;
    INSERT INTO drop_buyers (drop_id, buyer_id, per_buyer_limit, live_units)
    VALUES (d.id, p_buyer, d.per_buyer_limit, p_quantity)
    ON CONFLICT (drop_id, buyer_id)
    DO UPDATE SET live_units = drop_buyers.live_units + EXCLUDED.live_units;
    PERFORM attribution_credit_order(p_buyer, d.room_id, o.created_at - p_credit_window,
                                     o.created_at, o.id, p_credit_rule, d.commission_bps);
    INSERT INTO idempotency_keys (buyer_id, key, fingerprint, drop_id, order_id,
                                  response_status, hold_expires_at, amount_cents)
    VALUES (p_buyer, p_key, p_fingerprint, p_drop, o.id, 201, o.hold_expires_at,
            o.amount_cents);
    placed_outcome := 'placed';
    order_id := o.id;
    hold_expires_at := o.hold_expires_at;
    amount_cents := o.amount_cents;
END $$;

-- Orders are given as parallel arrays; p_units holds every order's units one after another,
-- p_quantities[i] of them for order i. One row comes back per order, in order. Each order is
-- placed in its own subtransaction (see 0010).
CREATE FUNCTION storefront_place_orders(
    p_drops bigint[],
    p_buyers text[],
    p_quantities integer[],
    p_units integer[],
    p_keys text[],
    p_fingerprints bytea[],
    p_hold interval,
    p_credit_rule text,
    p_credit_window interval
) RETURNS TABLE (
    placed_outcome text,
    order_id bigint,
    hold_expires_at timestamptz,
    amount_cents bigint
) LANGUAGE plpgsql AS $$
DECLARE
    orders integer := coalesce(cardinality(p_drops), 0);
    next_unit integer := 1;
    placed record;
    refused_by text;
BEGIN
    IF orders <> coalesce(cardinality(p_buyers), 0)
       OR orders <> coalesce(cardinality(p_quantities), 0)
       OR orders <> coalesce(cardinality(p_keys), 0)
       OR orders <> coalesce(cardinality(p_fingerprints), 0) THEN
        RAISE EXCEPTION 'storefront_place_orders: arrays of different lengths'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(p_units), 0)
       <> (SELECT coalesce(sum(q), 0) FROM unnest(p_quantities) AS q) THEN
        RAISE EXCEPTION 'storefront_place_orders: % units for quantities summing to %',
            coalesce(cardinality(p_units), 0), (SELECT sum(q) FROM unnest(p_quantities) AS q)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. orders LOOP
        placed_outcome := NULL;
        order_id := NULL;
        hold_expires_at := NULL;
        amount_cents := NULL;
        BEGIN
            SELECT * INTO placed FROM storefront_place_order(
                p_drops[i], p_buyers[i], p_quantities[i], p_hold,
                p_units[next_unit : next_unit + p_quantities[i] - 1],
                p_keys[i], p_fingerprints[i], p_credit_rule, p_credit_window);
            placed_outcome := placed.placed_outcome;
            order_id := placed.order_id;
            hold_expires_at := placed.hold_expires_at;
            amount_cents := placed.amount_cents;
        EXCEPTION
            WHEN unique_violation OR check_violation THEN
                GET STACKED DIAGNOSTICS refused_by = CONSTRAINT_NAME;
                placed_outcome := CASE refused_by
                    WHEN 'idempotency_keys_pkey' THEN 'key_taken'
                    WHEN 'stock_claims_one_live_per_unit' THEN 'unit_taken'
                    WHEN 'drop_buyers_check' THEN 'over_limit'
                    WHEN 'drop_buyers_live_units_check' THEN 'over_limit'
                END;
                IF placed_outcome IS NULL THEN
                    RAISE;
                END IF;
        END;
        next_unit := next_unit + p_quantities[i];
        RETURN NEXT;
    END LOOP;
END $$;
