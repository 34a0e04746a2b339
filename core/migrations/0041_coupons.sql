-- Coupons: a host releases a number of coupons in a room; viewers claim them (a Redis gate in
-- front, like a drop's, PostgreSQL the truth) and apply a claim to one order at the buy.
--
-- The no-over-issue guarantee is the drop's: a coupon owns claim numbers 1..quantity and a
-- claim takes one (unique per coupon, CHECKed against the coupon's quantity through a foreign
-- key), and a user's claims are counted in coupon_users under a CHECK against the coupon's
-- per-user limit. Whatever the gate believes, no coupon is claimed more than its quantity,
-- nor by anyone more than its limit.

CREATE TABLE coupons (
    id                bigserial PRIMARY KEY,
    room_id           bigint NOT NULL REFERENCES rooms(id),
    product_id        bigint REFERENCES products(id),
    title             text NOT NULL CHECK (length(title) BETWEEN 1 AND 120),
    amount_off_cents  bigint CHECK (amount_off_cents >= 1),
    percent_off_bps   integer CHECK (percent_off_bps BETWEEN 1 AND 10000),
    min_spend_cents   bigint NOT NULL DEFAULT 0 CHECK (min_spend_cents >= 0),
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 100000),
    per_user_limit    integer NOT NULL CHECK (per_user_limit BETWEEN 1 AND quantity),
    claim_starts_at   timestamptz NOT NULL,
    claim_ends_at     timestamptz NOT NULL CHECK (claim_ends_at > claim_starts_at),
    -- a claim may be applied until claimed_at + valid_for
    valid_for         interval NOT NULL CHECK (valid_for > interval '0'),
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((amount_off_cents IS NULL) <> (percent_off_bps IS NULL)),
    UNIQUE (id, quantity),
    UNIQUE (id, per_user_limit)
);
CREATE INDEX coupons_room_idx ON coupons (room_id, id DESC);

-- How many claims each user holds of a coupon; the CHECK is the per-user limit.
CREATE TABLE coupon_users (
    coupon_id       bigint NOT NULL,
    user_id         text NOT NULL,
    per_user_limit  integer NOT NULL,
    claims          integer NOT NULL CHECK (claims >= 0 AND claims <= per_user_limit),
    PRIMARY KEY (coupon_id, user_id),
    FOREIGN KEY (coupon_id, per_user_limit) REFERENCES coupons (id, per_user_limit)
);

CREATE TABLE coupon_claims (
    id               bigserial PRIMARY KEY,
    coupon_id        bigint NOT NULL,
    coupon_quantity  integer NOT NULL,
    claim_no         integer NOT NULL CHECK (claim_no BETWEEN 1 AND coupon_quantity),
    user_id          text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    -- SHA-256 of method, path and body of the request that claimed
    fingerprint      bytea NOT NULL CHECK (length(fingerprint) = 32),
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL CHECK (expires_at > claimed_at),
    FOREIGN KEY (coupon_id, coupon_quantity) REFERENCES coupons (id, quantity),
    -- the no-over-issue constraint: each of the coupon's numbers is claimed once
    UNIQUE (coupon_id, claim_no),
    -- one Idempotency-Key, one claim
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX coupon_claims_user_idx ON coupon_claims (user_id, expires_at);

-- Claims are facts: never changed, never deleted (an order says whether one is used).
CREATE TRIGGER coupon_claims_no_change
    BEFORE UPDATE OR DELETE ON coupon_claims
    FOR EACH ROW EXECUTE FUNCTION order_attributions_immutable();

-- An order may apply one claim. Its amount is price × quantity − discount (never below 0), and
-- a partial refund returns the amount pro rata: after r of q units, refunded_cents is
-- floor(amount × r / q), so the last unit returns what is left to the cent.
ALTER TABLE orders
    ADD COLUMN coupon_claim_id bigint REFERENCES coupon_claims(id),
    ADD COLUMN discount_cents bigint NOT NULL DEFAULT 0 CHECK (discount_cents >= 0);
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = 'orders'::regclass AND contype = 'c' LOOP
        IF c.def LIKE '%amount_cents = (unit_price_cents * quantity)%'
           OR c.def LIKE '%refunded_cents = (refunded_units * unit_price_cents)%' THEN
            EXECUTE format('ALTER TABLE orders DROP CONSTRAINT %I', c.conname);
        END IF;
    END LOOP;
END $$;
ALTER TABLE orders
    ADD CONSTRAINT orders_amount_after_discount
        CHECK (amount_cents = unit_price_cents * quantity - discount_cents AND amount_cents >= 0),
    ADD CONSTRAINT orders_refund_pro_rata
        CHECK (refunded_cents = amount_cents * refunded_units / quantity);

-- The one-use constraint: a claim is applied by at most one order that is not expired. An
-- expired hold gives its claim back; a refund does not.
CREATE UNIQUE INDEX orders_one_per_coupon_claim ON orders (coupon_claim_id)
    WHERE coupon_claim_id IS NOT NULL AND status <> 'expired';

-- A payment that arrives after its hold expired revives the order (storefront.billing). If its
-- claim went to another order meanwhile, that order keeps it: the revived order keeps the price
-- it was quoted but no longer holds the claim.
CREATE FUNCTION orders_revival_keeps_claims_single() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'expired' AND NEW.status <> 'expired' AND NEW.coupon_claim_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM orders o WHERE o.coupon_claim_id = NEW.coupon_claim_id
                   AND o.id <> NEW.id AND o.status <> 'expired') THEN
        NEW.coupon_claim_id := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER orders_revival_claims
    BEFORE UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_revival_keeps_claims_single();

-- What a claim takes off an order of `p_gross` cents: nothing below the minimum spend; a fixed
-- amount or a rate (rounded down), never more than the order.
CREATE FUNCTION coupon_discount(p_coupon bigint, p_gross bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_gross < c.min_spend_cents THEN 0
                ELSE least(p_gross, coalesce(c.amount_off_cents,
                                             p_gross * c.percent_off_bps / 10000)) END
    FROM coupons c WHERE c.id = p_coupon
$$;

-- storefront_place_order (0014) with a coupon claim (0 = none) and a referral code ('' = none).
--
-- New outcomes:
--   coupon_taken     the claim is applied by another live order (orders_one_per_coupon_claim)
--   coupon_invalid   the claim is not the buyer's, has expired, belongs to another room or
--                    product, or the order does not reach its minimum spend
--   code_missing     no such referral code
DROP FUNCTION storefront_place_orders(bigint[], text[], integer[], integer[], text[], bytea[],
                                      interval, text, interval);
DROP FUNCTION storefront_place_order(bigint, text, integer, interval, integer[], text, bytea,
                                     text, interval);

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
    p_coupon_claim bigint,
    p_referral_code text,
    OUT placed_outcome text,
    OUT order_id bigint,
    OUT hold_expires_at timestamptz,
    OUT amount_cents bigint
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    d record;
    o record;
    cl record;
    discount bigint := 0;
    code_entry bigint;
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
    IF p_coupon_claim IS NOT NULL AND p_coupon_claim <> 0 THEN
        SELECT c.id AS coupon_id, c.room_id, c.product_id, c.min_spend_cents, k.expires_at
        INTO cl
        FROM coupon_claims k JOIN coupons c ON c.id = k.coupon_id
        WHERE k.id = p_coupon_claim AND k.user_id = p_buyer;
        IF NOT FOUND OR cl.expires_at <= now() OR cl.room_id <> d.room_id
           OR cl.product_id <> d.product_id
           OR d.price_cents * p_quantity < cl.min_spend_cents THEN
            placed_outcome := 'coupon_invalid';
            RETURN;
        END IF;
        discount := coupon_discount(cl.coupon_id, d.price_cents * p_quantity);
    ELSE
        p_coupon_claim := NULL;
    END IF;
    IF p_referral_code IS NOT NULL AND p_referral_code <> '' THEN
        INSERT INTO room_entries (room_id, code_id, distributor_id, visitor, user_id, source)
        SELECT d.room_id, r.id, r.distributor_id, 'u:' || p_buyer, p_buyer, 'code'
        FROM referral_codes r WHERE r.code = upper(p_referral_code)
        RETURNING id INTO code_entry;
        IF code_entry IS NULL THEN
            placed_outcome := 'code_missing';
            RETURN;
        END IF;
        INSERT INTO attribution_dirty (kind, target)
        SELECT 'dashboard', distributor_id FROM room_entries WHERE id = code_entry;
    END IF;

    INSERT INTO orders (drop_id, room_id, product_id, buyer_id, quantity, unit_price_cents,
                        amount_cents, commission_bps, hold_expires_at, coupon_claim_id,
                        discount_cents)
    VALUES (d.id, d.room_id, d.product_id, p_buyer, p_quantity, d.price_cents,
            d.price_cents * p_quantity - discount, d.commission_bps, now() + p_hold,
            p_coupon_claim, discount)
    RETURNING id, orders.amount_cents, orders.hold_expires_at, created_at INTO o;
    INSERT INTO stock_claims (drop_id, unit_no, order_id)
    SELECT p_drop, unit_no, o.id FROM unnest(p_units) AS unit_no;
    INSERT INTO drop_buyers (drop_id, buyer_id, per_buyer_limit, live_units)
    VALUES (d.id, p_buyer, d.per_buyer_limit, p_quantity)
    ON CONFLICT (drop_id, buyer_id)
    DO UPDATE SET live_units = drop_buyers.live_units + EXCLUDED.live_units;
    PERFORM attribution_credit_order(p_buyer, d.room_id, o.created_at - p_credit_window,
                                     o.created_at, o.id, p_credit_rule, d.commission_bps,
                                     code_entry);
    INSERT INTO idempotency_keys (buyer_id, key, fingerprint, drop_id, order_id,
                                  response_status, hold_expires_at, amount_cents)
    VALUES (p_buyer, p_key, p_fingerprint, p_drop, o.id, 201, o.hold_expires_at,
            o.amount_cents);
    placed_outcome := 'placed';
    order_id := o.id;
    hold_expires_at := o.hold_expires_at;
    amount_cents := o.amount_cents;
END $$;

-- As 0014's, with a claim (0 = none) and a referral code ('' = none) per order.
CREATE FUNCTION storefront_place_orders(
    p_drops bigint[],
    p_buyers text[],
    p_quantities integer[],
    p_units integer[],
    p_keys text[],
    p_fingerprints bytea[],
    p_hold interval,
    p_credit_rule text,
    p_credit_window interval,
    p_coupon_claims bigint[],
    p_referral_codes text[]
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
       OR orders <> coalesce(cardinality(p_fingerprints), 0)
       OR orders <> coalesce(cardinality(p_coupon_claims), 0)
       OR orders <> coalesce(cardinality(p_referral_codes), 0) THEN
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
                p_keys[i], p_fingerprints[i], p_credit_rule, p_credit_window,
                p_coupon_claims[i], p_referral_codes[i]);
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
                    WHEN 'orders_one_per_coupon_claim' THEN 'coupon_taken'
                END;
                IF placed_outcome IS NULL THEN
                    RAISE;
                END IF;
        END;
        next_unit := next_unit + p_quantities[i];
        RETURN NEXT;
    END LOOP;
END $$;
