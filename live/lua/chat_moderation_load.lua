-- Load a room's moderation hash from what PostgreSQL (the truth) holds, unless it is loaded
-- already: after Redis lost the hash (a flush, a failover without the write, a restart without
-- persistence) the first post or subscribe loads it again, before anything is decided on it.
-- Fields written since (a post's rate fields) are kept; only the loaded fields are set. A
-- decision copies itself into the hash after PostgreSQL committed it and changes the hash's
-- version `v` first (live.chat.write_moderation): a load whose read of PostgreSQL may predate
-- such a decision sees another version than it read before, and is refused, to be read again.
--
-- KEYS[1] the room's moderation hash `{chat:ID}:mod`
-- ARGV[1] the version `v` read before reading PostgreSQL ("" for none), then field, value,
--   field, value... (`mod:<user>`, `ban:<user>`, `mute:<user>`, `slow`, `closed`, `words`,
--   `pinned`; see chat_post.lua)
--
-- Returns 1 when it loaded the hash, 0 when it was loaded already, -1 when the version moved.
if redis.call('HEXISTS', KEYS[1], 'built') == 1 then
    return 0
end
if (redis.call('HGET', KEYS[1], 'v') or '') ~= ARGV[1] then
    return -1
end
if #ARGV > 1 then
    redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
redis.call('HSET', KEYS[1], 'built', '1')
return 1
