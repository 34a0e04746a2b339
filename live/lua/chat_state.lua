-- What a subscribe to `chat:ID` needs, in one consistent view: whether the subscriber is
-- banned, the stream position (and, recovering, the history after the client's offset, with
-- the ids of deleted messages among it), the recent messages, the pinned notice and settings.
--
-- KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] moderation hash `{chat:ID}:mod`,
-- KEYS[4] recent messages list `{chat:ID}:recent`, KEYS[5] deleted message ids set
--   `{chat:ID}:deleted`, KEYS[6] latest-values hash (core.events.latest_key)
-- ARGV[1] the client's offset, or "" for a fresh subscribe, ARGV[2] TTL seconds for a newly
-- created meta hash, ARGV[3] history size (more entries cannot be recovered), ARGV[4] subscriber's user id ("" for a guest),
-- ARGV[5] recent messages wanted
--
-- Returns {1} for a banned subscriber, {2} when the moderation hash is not loaded (see
-- chat_moderation_load.lua), else
-- {0, top, epoch, entries, recent (newest first), pinned or "", slow, closed, deleted offsets,
-- newest stream offset, latest values (HGETALL)}; live.history explains the recovery check.
if redis.call('HEXISTS', KEYS[3], 'built') == 0 then
    return {2}
end
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[3], 'ban:' .. ARGV[4]) == 1 then
    return {1}
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x%x', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', KEYS[1], 'e', epoch)
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    redis.call('DEL', KEYS[6])
end
local top = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local stored = redis.call('HGET', KEYS[1], 'h') or '0'
local entries = {}
local deleted = {}
local latest = {}
if ARGV[1] ~= '' then
    local since = tonumber(ARGV[1])
    if since < top then
        entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[3] + 1)
        latest = redis.call('HGETALL', KEYS[6])
        for _, entry in ipairs(entries) do
            local offset = string.match(entry[1], '^(%d+)')
            if redis.call('SISMEMBER', KEYS[5], offset) == 1 then
                table.insert(deleted, offset)
            end
        end
    end
end
local recent = redis.call('LRANGE', KEYS[4], 0, tonumber(ARGV[5]) - 1)
local settings = redis.call('HMGET', KEYS[3], 'pinned', 'slow', 'closed')
return {0, top, epoch, entries, recent, settings[1] or '', settings[2] or '0',
    settings[3] or '0', deleted, stored, latest}
