-- Room chat: who moderates a room, who is muted or banned there, the room's chat settings, and
-- every moderation decision. PostgreSQL is the record; the hub enforces a mirror in Redis
-- (`{chat:ID}:mod`, written by the moderation routes after commit).
CREATE TABLE chat_moderators (
    room_id         bigint NOT NULL REFERENCES rooms(id),
    user_id         text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    appointed_by    text NOT NULL,
    appointed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

-- A mute ends at `until`; a ban has no end until it is lifted (the row is deleted).
CREATE TABLE chat_restrictions (
    room_id     bigint NOT NULL REFERENCES rooms(id),
    user_id     text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    kind        text NOT NULL CHECK (kind IN ('mute', 'ban')),
    until       timestamptz,
    decided_by  text NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id, kind),
    CHECK ((kind = 'mute') = (until IS NOT NULL))
);

CREATE TABLE chat_settings (
    room_id         bigint PRIMARY KEY REFERENCES rooms(id),
    slow_mode_s     integer NOT NULL DEFAULT 0 CHECK (slow_mode_s BETWEEN 0 AND 3600),
    blocked_words   text[] NOT NULL DEFAULT '{}',
    closed          boolean NOT NULL DEFAULT false,
    pinned          text CHECK (pinned IS NULL OR length(pinned) BETWEEN 1 AND 200),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Who did what to whom, when: appended to, never changed.
CREATE TABLE chat_moderation_log (
    id              bigserial PRIMARY KEY,
    room_id         bigint NOT NULL REFERENCES rooms(id),
    actor_id        text NOT NULL,
    action          text NOT NULL CHECK (action IN (
                        'appoint', 'dismiss', 'mute', 'unmute', 'ban', 'unban', 'delete',
                        'settings', 'pin', 'unpin')),
    target_user_id  text,
    message_id      text,
    detail          jsonb NOT NULL DEFAULT '{}',
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_moderation_log_room_idx ON chat_moderation_log (room_id, id DESC);

CREATE FUNCTION chat_moderation_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the moderation log is append-only' USING ERRCODE = 'check_violation';
END;
$$;
CREATE TRIGGER chat_moderation_log_append_only BEFORE UPDATE OR DELETE ON chat_moderation_log
    FOR EACH ROW EXECUTE FUNCTION chat_moderation_log_append_only();
