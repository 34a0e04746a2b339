-- Crediting an order as one SQL function, so that the statement creating an order can decide its
-- attribution in the same round trip (attribution.credit_order runs it on its own too).
--
-- attribution_credit_order snapshots which distributor (if any) the order credits: the buyer's
-- link entry into the room within (p_since, p_at], the newest under rule 'last', the oldest
-- under 'first'; only entries made by the identified buyer bind. It returns the credited
-- distributor id, or NULL when the order credits nobody. Idempotent: a second call for the same
-- order keeps (and returns) the first decision.
CREATE FUNCTION attribution_credit_order(
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
BEGIN
    SELECT e.id, e.distributor_id, d.user_id AS distributor_user_id INTO entry
    FROM room_entries e JOIN distributors d ON d.id = e.distributor_id
    WHERE e.user_id = p_buyer AND e.room_id = p_room AND e.link_id IS NOT NULL
      AND e.created_at > p_since AND e.created_at <= p_at
    -- 'first': the oldest entry; otherwise the newest
    ORDER BY CASE WHEN p_rule = 'first' THEN e.created_at END ASC,
             CASE WHEN p_rule = 'first' THEN e.id END ASC,
             e.created_at DESC, e.id DESC
    LIMIT 1;
    INSERT INTO order_attributions
        (order_id, room_id, buyer_id, distributor_id, entry_id, rule, commission_bps,
         self_referral, decided_at)
    VALUES (p_order, p_room, p_buyer, entry.distributor_id, entry.id,
            CASE WHEN entry.id IS NULL THEN 'none' ELSE p_rule END, p_commission_bps,
            coalesce(entry.distributor_user_id = p_buyer, false), p_at)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING distributor_id INTO credited;
    IF NOT FOUND THEN
        SELECT a.distributor_id INTO credited FROM order_attributions a WHERE a.order_id = p_order;
    END IF;
    RETURN credited;
END $$;
