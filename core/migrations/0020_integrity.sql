-- Integrity and money operations: self-referral beyond the account, the review queue,
-- commission rules (per product, per distributor, tiers) snapshotted on the order, withdrawals.

-- Which accounts were seen on which device (`X-Device-Id` header or the `lsd` cookie): a buyer
-- and a distributor seen on one device are one person as far as commission goes.
CREATE TABLE device_sightings (
    user_id        text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    device_id      text NOT NULL CHECK (length(device_id) BETWEEN 1 AND 128),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX device_sightings_device_idx ON device_sightings (device_id, user_id);

-- Payment instruments (the provider's fingerprint of a card or wallet) each buyer paid with.
CREATE TABLE payment_fingerprints (
    user_id        text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    fingerprint    text NOT NULL CHECK (length(fingerprint) BETWEEN 1 AND 255),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, fingerprint)
);
CREATE INDEX payment_fingerprints_fingerprint_idx ON payment_fingerprints (fingerprint, user_id);

-- Where an entry came from: review signals (click bursts per device, per address).
ALTER TABLE room_entries
    ADD COLUMN device_id text CHECK (device_id IS NULL OR length(device_id) BETWEEN 1 AND 128),
    ADD COLUMN client_addr text CHECK (client_addr IS NULL OR length(client_addr) <= 64);
CREATE INDEX room_entries_device_burst_idx ON room_entries (distributor_id, device_id, created_at)
    WHERE link_id IS NOT NULL AND device_id IS NOT NULL;
CREATE INDEX room_entries_address_burst_idx
    ON room_entries (distributor_id, client_addr, created_at)
    WHERE link_id IS NOT NULL AND client_addr IS NOT NULL;

-- Every reason an order is a self-referral, recorded when found: at the order (account, device)
-- or at its payment (payment fingerprint). Any row makes the order's commission 0.
CREATE TABLE self_referral_matches (
    order_id    bigint NOT NULL REFERENCES orders(id),
    reason      text NOT NULL CHECK (reason IN ('account', 'device', 'payment')),
    detail      text,
    matched_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, reason)
);

-- The review queue: an order whose attribution looks suspicious holds its commission
-- `under_review` (it neither confirms nor pays) until an admin decides. A decision is final.
CREATE TABLE order_reviews (
    order_id        bigint PRIMARY KEY REFERENCES orders(id),
    distributor_id  bigint NOT NULL REFERENCES distributors(id),
    reasons         text[] NOT NULL CHECK (cardinality(reasons) >= 1),
    signals         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'approved', 'rejected')),
    flagged_at      timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    decided_by      text CHECK (decided_by IS NULL OR length(decided_by) BETWEEN 1 AND 128),
    note            text CHECK (note IS NULL OR length(note) <= 1000),
    CHECK ((status = 'open') = (decided_at IS NULL)),
    CHECK ((status = 'open') = (decided_by IS NULL))
);
CREATE INDEX order_reviews_open_idx ON order_reviews (flagged_at) WHERE status = 'open';

CREATE FUNCTION order_reviews_decide_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.status <> 'open' OR NEW.order_id <> OLD.order_id
       OR NEW.distributor_id <> OLD.distributor_id THEN
        RAISE EXCEPTION 'review of order % is decided (% refused)', OLD.order_id, TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER order_reviews_final
    BEFORE UPDATE OR DELETE ON order_reviews
    FOR EACH ROW EXECUTE FUNCTION order_reviews_decide_once();

-- Commission rules. A product pays a rate (products.commission_bps) or, when commission_cents
-- is set, a fixed amount per unit (its rate is then 0). A distributor may have overrides, for
-- one product or for all; tiers add bonus_bps to a distributor's own rate once their own
-- confirmed sales reach min_confirmed_gmv_cents. Single level: nothing here names a second
-- distributor.
ALTER TABLE products
    ADD COLUMN commission_cents bigint CHECK (commission_cents IS NULL OR commission_cents >= 0);

CREATE TABLE distributor_rates (
    id                bigserial PRIMARY KEY,
    distributor_id    bigint NOT NULL REFERENCES distributors(id),
    product_id        bigint REFERENCES products(id),
    commission_bps    integer CHECK (commission_bps BETWEEN 0 AND 10000),
    commission_cents  bigint CHECK (commission_cents >= 0),
    updated_by        text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((commission_bps IS NULL) <> (commission_cents IS NULL)),
    UNIQUE NULLS NOT DISTINCT (distributor_id, product_id)
);

CREATE TABLE commission_tiers (
    name                     text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    min_confirmed_gmv_cents  bigint NOT NULL UNIQUE CHECK (min_confirmed_gmv_cents >= 0),
    bonus_bps                integer NOT NULL CHECK (bonus_bps BETWEEN 0 AND 10000)
);

-- The terms a credited order pays under, decided with its attribution and never changed:
-- commission = floor(net amount × order_attributions.commission_bps / 10000)
--              + commission_cents × net units, never more than the net amount.
-- order_attributions.commission_bps is the base rate plus the tier's bonus.
CREATE TABLE order_commission_terms (
    order_id             bigint PRIMARY KEY,
    distributor_id       bigint NOT NULL,
    source               text NOT NULL
                         CHECK (source IN ('product', 'distributor_product', 'distributor')),
    base_bps             integer NOT NULL CHECK (base_bps BETWEEN 0 AND 10000),
    commission_cents     bigint NOT NULL CHECK (commission_cents >= 0),
    tier                 text,
    bonus_bps            integer NOT NULL CHECK (bonus_bps BETWEEN 0 AND 10000),
    confirmed_gmv_cents  bigint NOT NULL,
    FOREIGN KEY (order_id, distributor_id) REFERENCES order_attributions (order_id, distributor_id)
);
CREATE TRIGGER order_commission_terms_no_change
    BEFORE UPDATE OR DELETE ON order_commission_terms
    FOR EACH ROW EXECUTE FUNCTION order_attributions_immutable();

-- Ledger: `review` records an admin's decision on a flagged order (a rejection takes the
-- pending commission back); `withdrawal` pays a distributor's withdrawal, its fee going to the
-- platform's `withdrawal_fees` account. Neither is a payout batch's sweep.
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = 'ledger_transactions'::regclass AND contype = 'c' LOOP
        IF c.def LIKE '%''accrue''%' OR c.def LIKE '%order_id IS NULL%' THEN
            EXECUTE format('ALTER TABLE ledger_transactions DROP CONSTRAINT %I', c.conname);
        END IF;
    END LOOP;
    FOR c IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = 'ledger_accounts'::regclass AND contype = 'c' LOOP
        IF c.def LIKE '%commission_expense%' THEN
            EXECUTE format('ALTER TABLE ledger_accounts DROP CONSTRAINT %I', c.conname);
        END IF;
    END LOOP;
END $$;
ALTER TABLE ledger_transactions
    ADD CONSTRAINT ledger_transactions_kind_check CHECK (kind IN
        ('accrue', 'reverse', 'confirm', 'payout', 'clawback', 'review', 'withdrawal')),
    ADD CONSTRAINT ledger_transactions_order_check
        CHECK ((kind IN ('payout', 'withdrawal')) = (order_id IS NULL));
ALTER TABLE ledger_accounts
    ADD CONSTRAINT ledger_accounts_kind_check CHECK (
        (distributor_id IS NOT NULL AND kind IN ('pending', 'payable'))
        OR (distributor_id IS NULL
            AND kind IN ('commission_expense', 'payouts', 'withdrawal_fees'))
    );
CREATE UNIQUE INDEX ledger_transactions_review_once ON ledger_transactions (order_id)
    WHERE kind = 'review';

-- A ledger transaction's note (an admin's reason), append-only like the ledger.
CREATE TABLE ledger_notes (
    transaction_id  bigint PRIMARY KEY REFERENCES ledger_transactions(id),
    author          text NOT NULL,
    note            text NOT NULL CHECK (length(note) <= 1000)
);
CREATE TRIGGER ledger_notes_append_only
    BEFORE UPDATE OR DELETE ON ledger_notes
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- Withdrawals (提现): requested → approved → paid (in a payout batch), or rejected.
-- withdrawal_reserves holds what requested and approved withdrawals keep aside; a request
-- reserves its amount with one guarded UPDATE (reserved + amount <= payable balance), so
-- concurrent requests serialise on the row and can never reserve more than the balance.
CREATE TABLE withdrawals (
    id               bigserial PRIMARY KEY,
    distributor_id   bigint NOT NULL REFERENCES distributors(id),
    amount_cents     bigint NOT NULL CHECK (amount_cents > 0),
    fee_cents        bigint NOT NULL CHECK (fee_cents >= 0 AND fee_cents < amount_cents),
    status           text NOT NULL DEFAULT 'requested'
                     CHECK (status IN ('requested', 'approved', 'paid', 'rejected')),
    requested_at     timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    decided_by       text,
    note             text CHECK (note IS NULL OR length(note) <= 1000),
    paid_at          timestamptz,
    payout_batch_id  bigint REFERENCES payout_batches(id),
    CHECK ((status = 'requested') = (decided_at IS NULL)),
    CHECK ((status = 'paid') = (payout_batch_id IS NOT NULL)),
    CHECK ((status = 'paid') = (paid_at IS NOT NULL))
);
CREATE INDEX withdrawals_distributor_idx ON withdrawals (distributor_id, id DESC);
CREATE INDEX withdrawals_approved_idx ON withdrawals (id) WHERE status = 'approved';

CREATE TABLE withdrawal_reserves (
    distributor_id  bigint PRIMARY KEY REFERENCES distributors(id),
    reserved_cents  bigint NOT NULL DEFAULT 0 CHECK (reserved_cents >= 0)
);

-- Analytics: paid orders by time.
CREATE INDEX orders_paid_at_idx ON orders (paid_at) WHERE paid_at IS NOT NULL;
