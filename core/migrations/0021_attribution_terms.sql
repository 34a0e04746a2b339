-- An order's attribution decides, in the order's own statement, who it credits (as in 0008),
-- whether that is a self-referral (same account, or a device both were seen on, or a payment
-- instrument both paid with), and the commission terms it pays under (0020's rules).

-- The link entry that binds the buyer's order in the room: within (p_since, p_at], the newest
-- under rule 'last', the oldest under 'first'; only the identified buyer's entries bind.
CREATE FUNCTION attribution_binding(
    p_buyer text, p_room bigint, p_since timestamptz, p_at timestamptz, p_rule text,
    OUT entry_id bigint, OUT distributor_id bigint, OUT distributor_user_id text
) LANGUAGE sql STABLE AS $$
    SELECT e.id, e.distributor_id, d.user_id
    FROM room_entries e JOIN distributors d ON d.id = e.distributor_id
    WHERE e.user_id = p_buyer AND e.room_id = p_room AND e.link_id IS NOT NULL
      AND e.created_at > p_since AND e.created_at <= p_at
    ORDER BY CASE WHEN p_rule = 'first' THEN e.created_at END ASC,
             CASE WHEN p_rule = 'first' THEN e.id END ASC,
             e.created_at DESC, e.id DESC
    LIMIT 1
$$;

-- Why buyer and distributor are the same person, one row per reason found (none: they are not).
CREATE FUNCTION attribution_self_matches(p_buyer text, p_distributor_user text)
RETURNS TABLE (reason text, detail text) LANGUAGE sql STABLE AS $$
    SELECT 'account', NULL WHERE p_buyer = p_distributor_user
    UNION ALL
    (SELECT 'device', b.device_id
     FROM device_sightings b
     JOIN device_sightings d ON d.device_id = b.device_id AND d.user_id = p_distributor_user
     WHERE b.user_id = p_buyer AND p_buyer <> p_distributor_user
     ORDER BY b.device_id LIMIT 1)
    UNION ALL
    (SELECT 'payment', b.fingerprint
     FROM payment_fingerprints b
     JOIN payment_fingerprints d ON d.fingerprint = b.fingerprint AND d.user_id = p_distributor_user
     WHERE b.user_id = p_buyer AND p_buyer <> p_distributor_user
     ORDER BY b.fingerprint LIMIT 1)
$$;

-- A distributor's own confirmed sales: net amounts of their confirmed, not self-referred orders.
CREATE FUNCTION attribution_confirmed_gmv(p_distributor bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(o.amount_cents - o.refunded_cents), 0)::bigint
    FROM ledger_transactions t
    JOIN orders o ON o.id = t.order_id
    JOIN order_attributions a ON a.order_id = t.order_id
    WHERE t.distributor_id = p_distributor AND t.kind = 'confirm' AND NOT a.self_referral
      AND NOT EXISTS (SELECT 1 FROM self_referral_matches m WHERE m.order_id = t.order_id)
$$;

-- Same signature as 0008's, called the same way by storefront_place_order (0014).
CREATE OR REPLACE FUNCTION attribution_credit_order(
    p_buyer text,
    p_room bigint,
    p_since timestamptz,
    p_at timestamptz,
    p_order bigint,
    p_rule text,
    p_commission_bps integer
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    entry record;
    credited bigint;
    ord record;
    rate record;
    tier_name text;
    tier_bonus integer := 0;
    base_bps integer := p_commission_bps;
    per_unit bigint := 0;
    source text := 'product';
    gmv bigint := 0;
    is_self boolean := false;
BEGIN
    SELECT a.distributor_id INTO credited FROM order_attributions a WHERE a.order_id = p_order;
    IF FOUND THEN
        RETURN credited;  -- decided already: keep the first decision
    END IF;
    SELECT * INTO entry FROM attribution_binding(p_buyer, p_room, p_since, p_at, p_rule);
    IF entry.entry_id IS NULL THEN
        INSERT INTO order_attributions
            (order_id, room_id, buyer_id, distributor_id, entry_id, rule, commission_bps,
             self_referral, decided_at)
        VALUES (p_order, p_room, p_buyer, NULL, NULL, 'none', p_commission_bps, false, p_at)
        ON CONFLICT (order_id) DO NOTHING;
        RETURN NULL;
    END IF;

    INSERT INTO self_referral_matches (order_id, reason, detail)
    SELECT p_order, m.reason, m.detail
    FROM attribution_self_matches(p_buyer, entry.distributor_user_id) m;
    is_self := FOUND;

    -- the terms: a distributor's override for the product, else for everything, else the
    -- product's own rule; plus the bonus of the highest tier their confirmed sales reach
    SELECT o.product_id, p.commission_cents INTO ord
    FROM orders o JOIN products p ON p.id = o.product_id WHERE o.id = p_order;
    SELECT r.commission_bps, r.commission_cents, r.product_id INTO rate
    FROM distributor_rates r
    WHERE r.distributor_id = entry.distributor_id
      AND (r.product_id = ord.product_id OR r.product_id IS NULL)
    ORDER BY r.product_id NULLS LAST
    LIMIT 1;
    IF FOUND THEN
        base_bps := coalesce(rate.commission_bps, 0);
        per_unit := coalesce(rate.commission_cents, 0);
        source := CASE WHEN rate.product_id IS NULL THEN 'distributor'
                       ELSE 'distributor_product' END;
    ELSIF ord.commission_cents IS NOT NULL THEN
        base_bps := 0;
        per_unit := ord.commission_cents;
    END IF;
    IF EXISTS (SELECT 1 FROM commission_tiers) THEN
        gmv := attribution_confirmed_gmv(entry.distributor_id);
        SELECT t.name, t.bonus_bps INTO tier_name, tier_bonus FROM commission_tiers t
        WHERE t.min_confirmed_gmv_cents <= gmv
        ORDER BY t.min_confirmed_gmv_cents DESC LIMIT 1;
    END IF;

    INSERT INTO order_attributions
        (order_id, room_id, buyer_id, distributor_id, entry_id, rule, commission_bps,
         self_referral, decided_at)
    VALUES (p_order, p_room, p_buyer, entry.distributor_id, entry.entry_id, p_rule,
            least(base_bps + coalesce(tier_bonus, 0), 10000), is_self, p_at);
    INSERT INTO order_commission_terms
        (order_id, distributor_id, source, base_bps, commission_cents, tier, bonus_bps,
         confirmed_gmv_cents)
    VALUES (p_order, entry.distributor_id, source, base_bps, per_unit, tier_name,
            coalesce(tier_bonus, 0), gmv);
    RETURN entry.distributor_id;
END $$;
