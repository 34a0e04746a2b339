-- Publish one event to a channel: assign the next offset, keep it for recovery and publish,
-- atomically.
--
-- KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] sharded pub/sub channel (not a key, but
--   passed in KEYS so cluster routing sees the hash tag), KEYS[4] latest-values hash
--   (core.events.channel_keys, core.events.latest_key)
-- ARGV[1] event data (JSON), ARGV[2] coalesce key ("" = never coalesced),
-- ARGV[3] history size, ARGV[4] history TTL seconds
--
-- An ordinary event is appended to the capped history stream as entry `<offset>-0` with fields
-- d = data and p = the offset of the stream's previous entry (meta field h, the newest offset in
-- the stream), so a reader can tell whether trimming removed entries after a client's offset.
-- A latest-value event (a coalesce key) takes no stream entry: it replaces the key's field of
-- the latest-values hash, "<offset>\n<data>", so a room's viewer counts never push its sales
-- out of the history; recovery sends the values the client missed (live.history).
--
-- SPUBLISH (Redis/Valkey 7+): in a cluster the message stays on the shard that owns the
-- channel's slot, where the hubs listen with SSUBSCRIBE (live.pubsub), instead of crossing the
-- cluster bus to every node; with one server it is an ordinary publish.
--
-- Returns {offset, epoch}. The pub/sub message is "<offset>\n<epoch>\n<coalesce key>\n<data>".
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x%x', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', KEYS[1], 'e', epoch)
    -- offsets restart: what an earlier epoch left must not be taken for this one's
    redis.call('DEL', KEYS[2], KEYS[4])
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
if ARGV[2] == '' then
    local previous = redis.call('HGET', KEYS[1], 'h') or '0'
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'd', ARGV[1],
        'p', previous)
    redis.call('HSET', KEYS[1], 'h', offset)
else
    redis.call('HSET', KEYS[4], ARGV[2], offset .. '\n' .. ARGV[1])
end
-- the channel's keys live and expire together
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('SPUBLISH', KEYS[3], offset .. '\n' .. epoch .. '\n' .. ARGV[2] .. '\n' .. ARGV[1])
return {offset, epoch}
