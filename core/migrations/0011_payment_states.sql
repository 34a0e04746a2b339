-- A payment is a state machine, and the database holds it to its transitions.
--
--   pending ──payment.succeeded──▶ succeeded ──refund of the whole amount──▶ refunded
--      └─────payment.failed──────▶ failed
--
-- Who causes each: the provider's signed webhook moves a pending payment to succeeded or failed
-- (livesell marks it failed itself when the provider refuses to start it); livesell's refunds
-- add to refunded_cents and move a succeeded payment to refunded once all of it is returned.
-- succeeded, failed and refunded are final as far as the provider's events go: an event that
-- contradicts them is recorded in payment_events and reported, never applied.
--
-- One order has at most one live attempt (pending or succeeded): a second `pay` while one is
-- pending gets that attempt back, so concurrent pays cannot charge an order twice.

ALTER TABLE payments ADD COLUMN refunded_cents bigint NOT NULL DEFAULT 0;

-- Rows written before this migration: the earlier code refunded at the provider every succeeded
-- payment of an order after the first, and the order's own refunds from its first one. Record
-- that here, so that the constraints below describe what the provider holds.
UPDATE payments AS extra SET status = 'refunded', refunded_cents = extra.amount_cents
WHERE extra.status = 'succeeded'
  AND EXISTS (SELECT 1 FROM payments AS first
              WHERE first.order_id = extra.order_id AND first.status = 'succeeded'
                AND first.id < extra.id);
UPDATE payments AS p
SET refunded_cents = LEAST(o.refunded_cents, p.amount_cents),
    status = CASE WHEN o.refunded_cents >= p.amount_cents THEN 'refunded' ELSE 'succeeded' END
FROM orders AS o
WHERE o.id = p.order_id AND p.status = 'succeeded' AND o.refunded_cents > 0;
-- Attempts left pending beside a live one can no longer settle anything: they count as failed.
UPDATE payments AS p SET status = 'failed', settled_at = now()
WHERE p.status = 'pending'
  AND EXISTS (SELECT 1 FROM payments AS q
              WHERE q.order_id = p.order_id AND q.id <> p.id
                AND (q.status = 'succeeded' OR (q.status = 'pending' AND q.id > p.id)));

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments
    ADD CONSTRAINT payments_status_check
        CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded')),
    ADD CONSTRAINT payments_refunded_cents_check
        CHECK (refunded_cents BETWEEN 0 AND amount_cents),
    -- only money that was taken can be given back, and all of it once the payment is refunded
    ADD CONSTRAINT payments_refunds_of_taken_money
        CHECK (refunded_cents = 0 OR status IN ('succeeded', 'refunded')),
    ADD CONSTRAINT payments_refunded_means_all
        CHECK (status <> 'refunded' OR refunded_cents = amount_cents),
    ADD CONSTRAINT payments_settled_at_check
        CHECK (status = 'pending' OR settled_at IS NOT NULL);

CREATE UNIQUE INDEX payments_one_live_attempt_per_order
    ON payments (order_id) WHERE status IN ('pending', 'succeeded');

-- The transitions, enforced for every writer: the statuses move only along the arrows above,
-- refunded_cents only grows, and what identifies a payment never changes.
CREATE FUNCTION payments_transition_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.order_id <> OLD.order_id OR NEW.provider <> OLD.provider
       OR NEW.provider_payment_id <> OLD.provider_payment_id
       OR NEW.amount_cents <> OLD.amount_cents THEN
        RAISE EXCEPTION 'payment %: order, provider, id and amount never change', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_transition';
    END IF;
    IF NEW.refunded_cents < OLD.refunded_cents THEN
        RAISE EXCEPTION 'payment %: refunded_cents cannot shrink', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_transition';
    END IF;
    IF NEW.status = OLD.status
       OR (OLD.status = 'pending' AND NEW.status IN ('succeeded', 'failed'))
       OR (OLD.status = 'succeeded' AND NEW.status = 'refunded') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'payment %: % cannot become %', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_transition';
END
$$;

CREATE TRIGGER payments_transition BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_transition_check();
