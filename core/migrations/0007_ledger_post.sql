-- One ledger posting in one round trip.
--
-- ledger_post records a business event under its idempotency key and writes its entries, opening
-- the accounts it touches on first use. It returns the transaction id, or NULL when the key was
-- already posted (a replay posts nothing). It adds no rule of its own: 0005's constraints and
-- triggers still check every row (balance at commit, entry ownership, append-only).
--
-- Entries are given as parallel arrays of account kinds and amounts (no zero amounts). An account
-- kind names one account among the distributor's (`pending`, `payable`) and the platform's
-- (`commission_expense`, `payouts`): 0005's CHECK keeps those kinds apart.
CREATE FUNCTION ledger_post(
    p_kind text,
    p_key text,
    p_distributor_id bigint,
    p_order_id bigint,
    p_payout_batch_id bigint,
    p_refunded_total_cents bigint,
    p_accounts text[],
    p_amounts bigint[]
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    txn_id bigint;
    written bigint;
BEGIN
    IF cardinality(p_accounts) IS DISTINCT FROM cardinality(p_amounts) THEN
        RAISE EXCEPTION 'ledger_post: % account kinds for % amounts',
            cardinality(p_accounts), cardinality(p_amounts) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ledger_transactions
        (kind, idempotency_key, distributor_id, order_id, payout_batch_id, refunded_total_cents)
    VALUES (p_kind, p_key, p_distributor_id, p_order_id, p_payout_batch_id, p_refunded_total_cents)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO txn_id;
    IF txn_id IS NULL OR coalesce(cardinality(p_accounts), 0) = 0 THEN
        RETURN txn_id;
    END IF;
    INSERT INTO ledger_entries (transaction_id, account_id, amount_cents)
    SELECT txn_id, a.id, e.amount
    FROM unnest(p_accounts, p_amounts) AS e(kind, amount)
    JOIN ledger_accounts a ON a.kind = e.kind
        AND (a.distributor_id = p_distributor_id OR a.distributor_id IS NULL);
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written < cardinality(p_accounts) THEN
        -- first posting touching some account: open the distributor's and the platform's
        -- accounts, then write the entries still missing (this statement sees the new rows)
        INSERT INTO ledger_accounts (distributor_id, kind)
        VALUES (p_distributor_id, 'pending'), (p_distributor_id, 'payable'),
               (NULL, 'commission_expense'), (NULL, 'payouts')
        ON CONFLICT (distributor_id, kind) DO NOTHING;
        INSERT INTO ledger_entries (transaction_id, account_id, amount_cents)
        SELECT txn_id, a.id, e.amount
        FROM unnest(p_accounts, p_amounts) AS e(kind, amount)
        JOIN ledger_accounts a ON a.kind = e.kind
            AND (a.distributor_id = p_distributor_id OR a.distributor_id IS NULL)
        WHERE NOT EXISTS (SELECT 1 FROM ledger_entries x
                          WHERE x.transaction_id = txn_id AND x.account_id = a.id);
    END IF;
    RETURN txn_id;
END $$;
