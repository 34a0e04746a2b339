-- The commission ledger: double-entry, append-only, every transaction sums to zero.
--
-- Sign convention: a positive amount on a distributor's account is money owed to the distributor;
-- platform accounts carry the mirror image, so Σ over all entries of a transaction is 0.
--
--   accrue    order paid               distributor.pending  +c   platform.commission_expense −c
--   reverse   refund while pending     distributor.pending  −r   platform.commission_expense +r
--   confirm   return window passed     distributor.pending  −c   distributor.payable         +c
--   clawback  refund after confirming  distributor.payable  −r   platform.commission_expense +r
--   payout    payout batch             distributor.payable  −p   platform.payouts            +p
--
-- A clawback after payout drives `payable` negative; the next payout nets it.

CREATE TABLE ledger_accounts (
    id              bigserial PRIMARY KEY,
    distributor_id  bigint REFERENCES distributors(id),   -- NULL: a platform account
    kind            text NOT NULL,
    CHECK (
        (distributor_id IS NOT NULL AND kind IN ('pending', 'payable'))
        OR (distributor_id IS NULL AND kind IN ('commission_expense', 'payouts'))
    ),
    UNIQUE NULLS NOT DISTINCT (distributor_id, kind)
);

-- Accounts are opened on first use (`INSERT ... ON CONFLICT DO NOTHING`), platform ones included.

CREATE TABLE payout_batches (
    id           bigserial PRIMARY KEY,
    created_by   text NOT NULL CHECK (length(created_by) BETWEEN 1 AND 128),
    total_cents  bigint NOT NULL CHECK (total_cents > 0),
    items        integer NOT NULL CHECK (items > 0),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per business event. `idempotency_key` makes every posting happen at most once:
-- `order:<id>:accrue`, `order:<id>:refund:<cumulative refunded cents>`, `order:<id>:confirm`,
-- `payout:<batch>:<distributor>`.
CREATE TABLE ledger_transactions (
    id                    bigserial PRIMARY KEY,
    kind                  text NOT NULL
                          CHECK (kind IN ('accrue', 'reverse', 'confirm', 'payout', 'clawback')),
    idempotency_key       text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    distributor_id        bigint NOT NULL REFERENCES distributors(id),
    order_id              bigint REFERENCES orders(id),
    payout_batch_id       bigint REFERENCES payout_batches(id),
    -- for reverse / clawback: the order's cumulative refunded cents after this refund
    refunded_total_cents  bigint CHECK (refunded_total_cents IS NULL OR refunded_total_cents > 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'payout') = (payout_batch_id IS NOT NULL)),
    CHECK ((kind = 'payout') = (order_id IS NULL)),
    CHECK ((kind IN ('reverse', 'clawback')) = (refunded_total_cents IS NOT NULL)),
    -- single level: an order's postings can only credit the distributor its attribution names
    FOREIGN KEY (order_id, distributor_id) REFERENCES order_attributions (order_id, distributor_id),
    UNIQUE (payout_batch_id, distributor_id)
);
CREATE UNIQUE INDEX ledger_transactions_accrue_once ON ledger_transactions (order_id)
    WHERE kind = 'accrue';
CREATE UNIQUE INDEX ledger_transactions_confirm_once ON ledger_transactions (order_id)
    WHERE kind = 'confirm';
CREATE INDEX ledger_transactions_order_idx ON ledger_transactions (order_id)
    WHERE order_id IS NOT NULL;
CREATE INDEX ledger_transactions_distributor_idx ON ledger_transactions (distributor_id, kind);

CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    transaction_id  bigint NOT NULL REFERENCES ledger_transactions(id),
    account_id      bigint NOT NULL REFERENCES ledger_accounts(id),
    amount_cents    bigint NOT NULL CHECK (amount_cents <> 0),
    UNIQUE (transaction_id, account_id)
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id);

-- Entries may only touch platform accounts or the transaction's own distributor's accounts:
-- no posting can route an order's commission to a second distributor.
CREATE FUNCTION ledger_entry_account_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    account_owner bigint;
    txn_owner bigint;
BEGIN
    SELECT distributor_id INTO account_owner FROM ledger_accounts WHERE id = NEW.account_id;
    SELECT distributor_id INTO txn_owner FROM ledger_transactions WHERE id = NEW.transaction_id;
    IF account_owner IS NOT NULL AND account_owner IS DISTINCT FROM txn_owner THEN
        RAISE EXCEPTION 'ledger entry on account % of distributor % in a transaction of distributor %',
            NEW.account_id, account_owner, txn_owner USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_entries_account_owner
    BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_account_check();

-- Σ amount per transaction = 0, checked at commit so a transaction's entries can be inserted
-- one by one.
CREATE FUNCTION ledger_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
BEGIN
    SELECT coalesce(sum(amount_cents), 0) INTO total
    FROM ledger_entries WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: sum is %', NEW.transaction_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balanced();

-- Append-only: entries, transactions and batches are never updated or deleted. Corrections are
-- new transactions. (TRUNCATE is not a row change and stays available to operators and tests.)
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_transactions_append_only
    BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_accounts_append_only
    BEFORE UPDATE OR DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER payout_batches_append_only
    BEFORE UPDATE OR DELETE ON payout_batches
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
