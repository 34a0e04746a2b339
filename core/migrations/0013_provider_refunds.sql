-- Refunds at the provider. A refund takes money back in its own transaction (payments.
-- refunded_cents, migration 0011) and records here what livesell asks the provider to return,
-- under a refund id of livesell's own that the provider receives as its idempotency key
-- (Stripe) or out_refund_no (WeChat Pay): a request sent twice returns the money once. The
-- provider's signed notification settles the request:
--
--   requested ──refund.succeeded──▶ succeeded
--       └───────refund.failed─────▶ failed
--
-- succeeded and failed are final; a notification that contradicts them is recorded in
-- payment_events and reported, never applied.

-- The provider's own id for a payment, when it assigns one (a Stripe PaymentIntent): refunds
-- name it. Livesell's id (provider_payment_id) stays the one the events are matched by.
ALTER TABLE payments ADD COLUMN provider_reference text;

CREATE TABLE payment_refunds (
    id                  bigserial PRIMARY KEY,
    refund_id           text NOT NULL UNIQUE CHECK (length(refund_id) BETWEEN 1 AND 64),
    payment_id          bigint NOT NULL REFERENCES payments(id),
    amount_cents        bigint NOT NULL CHECK (amount_cents > 0),
    status              text NOT NULL DEFAULT 'requested'
                        CHECK (status IN ('requested', 'succeeded', 'failed')),
    -- the provider's id for the refund, once it has said it
    provider_refund_id  text,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    settled_at          timestamptz,
    CONSTRAINT payment_refunds_settled_at_check
        CHECK (status = 'requested' OR settled_at IS NOT NULL)
);
CREATE INDEX payment_refunds_payment_idx ON payment_refunds (payment_id);

-- A request is written in the transaction that took its money back: the requests of a payment
-- never ask for more than livesell took back from it (payments.refunded_cents).
CREATE FUNCTION payment_refunds_within_taken_back() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    taken_back bigint;
    asked bigint;
BEGIN
    SELECT refunded_cents INTO taken_back FROM payments WHERE id = NEW.payment_id FOR UPDATE;
    SELECT coalesce(sum(amount_cents), 0) INTO asked
    FROM payment_refunds WHERE payment_id = NEW.payment_id;
    IF asked + NEW.amount_cents > taken_back THEN
        RAISE EXCEPTION 'payment %: refunds of % cents asked, % taken back',
            NEW.payment_id, asked + NEW.amount_cents, taken_back
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_within_taken_back';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER payment_refunds_within_taken_back BEFORE INSERT ON payment_refunds
    FOR EACH ROW EXECUTE FUNCTION payment_refunds_within_taken_back();

-- The transitions, for every writer: only requested moves, and only to a final state; what a
-- request names never changes.
CREATE FUNCTION payment_refunds_transition_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.refund_id <> OLD.refund_id OR NEW.payment_id <> OLD.payment_id
       OR NEW.amount_cents <> OLD.amount_cents THEN
        RAISE EXCEPTION 'refund %: id, payment and amount never change', OLD.refund_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_transition';
    END IF;
    IF NEW.status = OLD.status
       OR (OLD.status = 'requested' AND NEW.status IN ('succeeded', 'failed')) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'refund %: % cannot become %', OLD.refund_id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_refunds_transition';
END
$$;

CREATE TRIGGER payment_refunds_transition BEFORE UPDATE ON payment_refunds
    FOR EACH ROW EXECUTE FUNCTION payment_refunds_transition_check();
