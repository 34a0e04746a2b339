-- Live rooms. A room belongs to one host; status only moves forward: scheduled → live → ended
-- (a scheduled room may also be ended without going live, i.e. cancelled).
CREATE TABLE rooms (
    id                  bigserial PRIMARY KEY,
    host_id             text NOT NULL CHECK (length(host_id) BETWEEN 1 AND 128),
    title               text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    status              text NOT NULL DEFAULT 'scheduled'
                        CHECK (status IN ('scheduled', 'live', 'ended')),
    pinned_product_id   bigint REFERENCES products(id),
    created_at          timestamptz NOT NULL DEFAULT now(),
    live_at             timestamptz,
    ended_at            timestamptz,
    CHECK (status <> 'live' OR live_at IS NOT NULL),
    CHECK (status <> 'ended' OR ended_at IS NOT NULL),
    CHECK (status = 'ended' OR ended_at IS NULL),
    CHECK (live_at IS NULL OR ended_at IS NULL OR ended_at >= live_at)
);
CREATE INDEX rooms_host_idx ON rooms (host_id);

-- Status never moves backward, whoever writes the row.
CREATE FUNCTION rooms_status_forward() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rank_old integer := array_position(ARRAY['scheduled', 'live', 'ended'], OLD.status);
    rank_new integer := array_position(ARRAY['scheduled', 'live', 'ended'], NEW.status);
BEGIN
    IF rank_new < rank_old THEN
        RAISE EXCEPTION 'room % cannot move from % back to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER rooms_status_forward BEFORE UPDATE OF status ON rooms
    FOR EACH ROW EXECUTE FUNCTION rooms_status_forward();
