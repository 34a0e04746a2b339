-- Distributor referral codes: a human-readable code (`ANNA88`) a viewer types at a buy, or gives
-- when entering or reserving a room. A code credits its distributor ahead of any link binding
-- (rule `code` in the audit trail); the buyer's own code is a self-referral like their own link.

CREATE TABLE referral_codes (
    id              bigserial PRIMARY KEY,
    -- stored upper-case: codes are case-insensitive, and unique as such
    code            text NOT NULL UNIQUE CHECK (code ~ '^[A-Z0-9]{4,16}$'),
    distributor_id  bigint NOT NULL UNIQUE REFERENCES distributors(id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- An entry into a room through a code: at a buy (source `code`), at an app's entry (`enter`),
-- or with a reservation (`reserve`). It credits exactly like a link entry, and goes first.
ALTER TABLE room_entries ADD COLUMN code_id bigint REFERENCES referral_codes(id);
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = 'room_entries'::regclass AND contype = 'c' LOOP
        IF c.def LIKE '%link_id IS NULL%distributor_id IS NULL%'
           OR c.def LIKE '%''click''%''enter''%' THEN
            EXECUTE format('ALTER TABLE room_entries DROP CONSTRAINT %I', c.conname);
        END IF;
    END LOOP;
END $$;
ALTER TABLE room_entries
    ADD CONSTRAINT room_entries_source_check
        CHECK (source IN ('click', 'enter', 'code', 'reserve')),
    -- credited through a link or a code, never both; a distributor exactly when one of them
    ADD CONSTRAINT room_entries_one_way_in CHECK (link_id IS NULL OR code_id IS NULL),
    ADD CONSTRAINT room_entries_credited_through
        CHECK ((distributor_id IS NULL) = (link_id IS NULL AND code_id IS NULL));
CREATE INDEX room_entries_code_binding_idx ON room_entries (user_id, room_id, created_at)
    WHERE code_id IS NOT NULL AND user_id IS NOT NULL;

DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = 'order_attributions'::regclass AND contype = 'c' LOOP
        IF c.def LIKE '%''last''%''first''%''none''%' THEN
            EXECUTE format('ALTER TABLE order_attributions DROP CONSTRAINT %I', c.conname);
        END IF;
    END LOOP;
END $$;
ALTER TABLE order_attributions ADD CONSTRAINT order_attributions_rule_check
    CHECK (rule IN ('last', 'first', 'none', 'code'));

-- The entry that binds the buyer's order in the room, within (p_since, p_at]: a code entry if
-- there is one (the newest under rule 'last', the oldest under 'first'), else a link entry the
-- same way. Only the identified buyer's entries bind. `via_code` says which kind bound.
DROP FUNCTION attribution_binding(text, bigint, timestamptz, timestamptz, text);
CREATE FUNCTION attribution_binding(
    p_buyer text, p_room bigint, p_since timestamptz, p_at timestamptz, p_rule text,
    OUT entry_id bigint, OUT distributor_id bigint, OUT distributor_user_id text,
    OUT via_code boolean
) LANGUAGE sql STABLE AS $$
    SELECT e.id, e.distributor_id, d.user_id, e.code_id IS NOT NULL
    FROM room_entries e JOIN distributors d ON d.id = e.distributor_id
    WHERE e.user_id = p_buyer AND e.room_id = p_room AND e.distributor_id IS NOT NULL
      AND e.created_at > p_since AND e.created_at <= p_at
    ORDER BY e.code_id IS NOT NULL DESC,
             CASE WHEN p_rule = 'first' THEN e.created_at END ASC,
             CASE WHEN p_rule = 'first' THEN e.id END ASC,
             e.created_at DESC, e.id DESC
    LIMIT 1
$$;

-- 0021's attribution_credit_order with one more argument: the entry of a referral code given at
-- the buy itself (NULL: none), which credits ahead of everything else.
DROP FUNCTION attribution_credit_order(text, bigint, timestamptz, timestamptz, bigint, text,
                                       integer);
CREATE FUNCTION attribution_credit_order(
    p_buyer text,
    p_room bigint,
    p_since timestamptz,
    p_at timestamptz,
    p_order bigint,
    p_rule text,
    p_commission_bps integer,
    p_code_entry bigint
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
    IF p_code_entry IS NOT NULL THEN
        SELECT e.id AS entry_id, e.distributor_id, d.user_id AS distributor_user_id,
               true AS via_code
        INTO entry
        FROM room_entries e JOIN distributors d ON d.id = e.distributor_id
        WHERE e.id = p_code_entry;
    ELSE
        SELECT * INTO entry FROM attribution_binding(p_buyer, p_room, p_since, p_at, p_rule);
    END IF;
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
    VALUES (p_order, p_room, p_buyer, entry.distributor_id, entry.entry_id,
            CASE WHEN entry.via_code THEN 'code' ELSE p_rule END,
            least(base_bps + coalesce(tier_bonus, 0), 10000), is_self, p_at);
    INSERT INTO order_commission_terms
        (order_id, distributor_id, source, base_bps, commission_cents, tier, bonus_bps,
         confirmed_gmv_cents)
    VALUES (p_order, entry.distributor_id, source, base_bps, per_unit, tier_name,
            coalesce(tier_bonus, 0), gmv);
    RETURN entry.distributor_id;
END $$;
