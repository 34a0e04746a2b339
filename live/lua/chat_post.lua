-- Accept one chat message or refuse it, and on acceptance publish it like core/lua/publish.lua
-- does (next offset, capped history stream, pub/sub), keep it among the room's recent messages,
-- all atomically: a mute, ban, setting or moderator appointment written before this call
-- decides it, whichever hub node the sender is on.
--
-- KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] pub/sub channel (core.events.channel_keys
--   of `chat:ID`), KEYS[4] the room's moderation hash `{chat:ID}:mod`, KEYS[5] the recent
--   messages list `{chat:ID}:recent`, KEYS[6] the room's posters HyperLogLog
--   `{chat:ID}:posters` (core.events.chat_posters_key), KEYS[7] the latest-values hash
--   (core.events.latest_key)
-- ARGV[1] sender's user id, ARGV[2] the room host's user id, ARGV[3] the text, casefolded,
-- ARGV[4] the default blocked words (casefolded, one a line), ARGV[5] message JSON up to its id,
-- ARGV[6] message JSON from after the id up to the role, ARGV[7] message JSON from after the
-- role up to the timestamp, ARGV[8] history size, ARGV[9] history TTL seconds,
-- ARGV[10] per-user burst, ARGV[11] per-user messages a second, ARGV[12] recent list size
--
-- Moderation hash fields: `mod:<user>` moderator, `ban:<user>` banned, `mute:<user>` muted
-- until (Unix ms), `closed` "1", `slow` seconds, `words` blocked words (casefolded, one a
-- line), `last:<user>` last accepted message (Unix ms), `rate:<user>` "<tokens>:<Unix ms>".
--
-- Returns {0, offset, role} when accepted, {1, "", ""} when the moderation hash is not loaded
-- (it has no `built` field: chat_moderation_load.lua loads it from PostgreSQL, then the post is
-- tried again), else {code, reason, until ms or ""} with code 103 (banned, muted, closed), 106
-- (slow mode, rate) or 107 (blocked word).
if redis.call('HEXISTS', KEYS[4], 'built') == 0 then
    return {1, '', ''}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local user = ARGV[1]
local role = 'viewer'
if user == ARGV[2] then
    role = 'host'
elseif redis.call('HEXISTS', KEYS[4], 'mod:' .. user) == 1 then
    role = 'moderator'
end
local state = redis.call('HMGET', KEYS[4], 'ban:' .. user, 'mute:' .. user, 'closed', 'words',
    'slow', 'last:' .. user, 'rate:' .. user)
if role == 'viewer' then
    if state[1] then
        return {103, 'banned from this chat', ''}
    end
    if state[2] and tonumber(state[2]) > now then
        return {103, 'muted', state[2]}
    end
    if state[3] == '1' then
        return {103, 'chat is closed', ''}
    end
end
local function blocked(words)
    if not words or words == '' then
        return false
    end
    for word in string.gmatch(words, '[^\n]+') do
        if string.find(ARGV[3], word, 1, true) then
            return true
        end
    end
    return false
end
if blocked(state[4]) or blocked(ARGV[4]) then
    return {107, 'blocked word', ''}
end
if role == 'viewer' then
    local slow = tonumber(state[5] or '0')
    if slow > 0 and state[6] and now - tonumber(state[6]) < slow * 1000 then
        return {106, 'slow mode', tostring(tonumber(state[6]) + slow * 1000)}
    end
end
local burst, per_s = tonumber(ARGV[10]), tonumber(ARGV[11])
local tokens, at = burst, now
if state[7] then
    local sep = string.find(state[7], ':', 1, true)
    tokens = tonumber(string.sub(state[7], 1, sep - 1))
    at = tonumber(string.sub(state[7], sep + 1))
end
tokens = math.min(burst, tokens + (now - at) * per_s / 1000)
if tokens < 1 then
    return {106, 'too many messages', ''}
end
redis.call('HSET', KEYS[4], 'rate:' .. user, string.format('%.3f:%d', tokens - 1, now),
    'last:' .. user, string.format('%d', now))

local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
    epoch = string.format('%x%x', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', KEYS[1], 'e', epoch)
    redis.call('DEL', KEYS[2], KEYS[7])
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local previous = redis.call('HGET', KEYS[1], 'h') or '0'
local data = ARGV[5] .. offset .. ARGV[6] .. role .. ARGV[7] .. string.format('%d', now) .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], offset .. '-0', 'd', data, 'p', previous)
redis.call('HSET', KEYS[1], 'h', offset)
redis.call('LPUSH', KEYS[5], data)
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[12]) - 1)
redis.call('PFADD', KEYS[6], user)
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('SPUBLISH', KEYS[3], offset .. '\n' .. epoch .. '\n\n' .. data)
return {0, offset, role}
