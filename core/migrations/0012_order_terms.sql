-- Order terms: an order's return window, fixed on the order when it starts. And the ids of a
-- start-up rehearsal's rows, which take no sequence's values (the section at the end).
--
-- A buyer may return a delivered order until its return_window_ends_at, and the commission of a
-- credited order is confirmed once that moment has passed. The delivery writes it, once:
-- delivered_at + the delivering process's LIVESELL_RETURN_WINDOW_S. Everything after reads the
-- stored moment, so a later change of the setting (or `livesell payouts` run from a shell with
-- another value) moves no existing order's terms: neither the buyer's right to return it nor the
-- distributor's settlement date. (The hold's end is stored the same way, hold_expires_at, when
-- the order is placed.)
--
-- Orders delivered before this migration: the window their process had was never recorded, and
-- the process applying this migration (whichever livesell process starts first after the
-- upgrade: the API, the hub, the worker or `livesell migrate`) is no witness of it. They get
-- delivered_at + the database's setting livesell.return_window_s when the operator has set one
-- before upgrading (`ALTER DATABASE livesell SET livesell.return_window_s = '1209600'`, for a
-- deployment that ran with another LIVESELL_RETURN_WINDOW_S), and otherwise delivered_at +
-- 604800 s (7 days, the setting's default).
ALTER TABLE orders ADD COLUMN return_window_ends_at timestamptz;

UPDATE orders
SET return_window_ends_at = delivered_at + make_interval(secs => coalesce(
        nullif(current_setting('livesell.return_window_s', true), '')::bigint, 604800))
WHERE delivered_at IS NOT NULL;

-- delivered (delivered_at set, whatever the status since) if and only if the window is fixed,
-- and never ending before the delivery
ALTER TABLE orders ADD CONSTRAINT orders_return_window_fixed
    CHECK ((delivered_at IS NULL) = (return_window_ends_at IS NULL)
           AND return_window_ends_at >= delivered_at);

-- The ids of a start-up rehearsal's order and unit claim.
--
-- An API rehearses an order on each pooled connection when it starts (storefront.placing's
-- rehearse_orders: one storefront_place_orders call in a transaction it rolls back), so that
-- PostgreSQL has compiled and planned the buy path before the first flash sale. A sequence's
-- nextval is not undone by a rollback: each start used to take an order number (and a claim id)
-- per connection, and a fresh database's first order was number 21. A transaction that sets
-- livesell.rehearsal_id (set_config(..., true): to its own end only) gives its new order and
-- claim that id instead of their sequences' next; unset, the default is the sequence's, as
-- before. The statements rehearsed are the very ones a real order runs, with the same plans.
ALTER TABLE orders ALTER COLUMN id SET DEFAULT coalesce(
    nullif(current_setting('livesell.rehearsal_id', true), '')::bigint,
    nextval('orders_id_seq'::regclass));
ALTER TABLE stock_claims ALTER COLUMN id SET DEFAULT coalesce(
    nullif(current_setting('livesell.rehearsal_id', true), '')::bigint,
    nextval('stock_claims_id_seq'::regclass));
