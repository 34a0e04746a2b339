-- Winners' orders written together.
--
-- In a flash sale the winners of one moment all want PostgreSQL at once, each for a transaction
-- whose commit costs more than its rows. storefront_place_orders writes as many orders as it is
-- given in one statement, one transaction and one commit: each order is placed by
-- storefront_place_order (0009) in its own subtransaction, so a constraint one order trips rolls
-- back that order alone and is reported by name (placed_outcome 'unique_violation' or
-- 'check_violation', refused_by the constraint); the others are written. It adds no rule of its
-- own. The caller keeps batches well under 64 orders (a backend caches 64 subtransactions; past
-- that, other backends' snapshots get slower).
--
-- Orders are given as parallel arrays; p_units holds every order's units one after another,
-- p_quantities[i] of them for order i. One row comes back per order, in order.
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
    placed_order bigint,
    placed_body bytea,
    refused_by text
) LANGUAGE plpgsql AS $$
DECLARE
    orders integer := coalesce(cardinality(p_drops), 0);
    next_unit integer := 1;
    placed record;
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
        placed_order := NULL;
        placed_body := NULL;
        refused_by := NULL;
        BEGIN
            SELECT * INTO placed FROM storefront_place_order(
                p_drops[i], p_buyers[i], p_quantities[i], p_hold,
                p_units[next_unit : next_unit + p_quantities[i] - 1],
                p_keys[i], p_fingerprints[i], p_credit_rule, p_credit_window);
            placed_outcome := placed.placed_outcome;
            placed_order := placed.placed_order;
            placed_body := placed.placed_body;
        EXCEPTION
            WHEN unique_violation THEN
                placed_outcome := 'unique_violation';
                GET STACKED DIAGNOSTICS refused_by = CONSTRAINT_NAME;
            WHEN check_violation THEN
                placed_outcome := 'check_violation';
                GET STACKED DIAGNOSTICS refused_by = CONSTRAINT_NAME;
        END;
        next_unit := next_unit + p_quantities[i];
        RETURN NEXT;
    END LOOP;
END $$;
