-- The conversion review signal's counts (attribution.reviews), kept per room so that a payment
-- reads two rows instead of counting the whole room's entries and orders: a payment that finds
-- them older than LIVESELL_REVIEW_COUNTS_S counts the room again, one payment at a time.
CREATE TABLE review_room_counts (
    room_id     bigint PRIMARY KEY REFERENCES rooms(id),
    counted_at  timestamptz NOT NULL,
    visitors    bigint NOT NULL CHECK (visitors >= 0),  -- distinct visitors of the room
    buyers      bigint NOT NULL CHECK (buyers >= 0)     -- distinct buyers with a paid order
);

-- Per distributor of the room (0: entries and orders no distributor brought): the distinct
-- visitors and buyers it brought, and those it alone brought (every entry, every paid order
-- through it). "The rest of the room" is then the room's total less the ones it alone brought.
CREATE TABLE review_distributor_counts (
    room_id         bigint NOT NULL REFERENCES review_room_counts(room_id),
    distributor_id  bigint NOT NULL CHECK (distributor_id >= 0),
    visitors        bigint NOT NULL,
    only_visitors   bigint NOT NULL,
    buyers          bigint NOT NULL,
    only_buyers     bigint NOT NULL,
    PRIMARY KEY (room_id, distributor_id),
    CHECK (0 <= only_visitors AND only_visitors <= visitors),
    CHECK (0 <= only_buyers AND only_buyers <= buyers)
);
