-- Publish one event to a channel: assign the next offset, append to the capped history stream
-- and publish, atomically.
--
-- KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] sharded pub/sub channel (not a key, but
--   passed in KEYS so cluster routing sees the hash tag) (core.events.channel_keys)
-- ARGV[1] event data (JSON), ARGV[2] coalesce key ("" = never coalesced),
-- ARGV[3] history size, ARGV[4] history TTL seconds
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
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'd', ARGV[1], 'k', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SPUBLISH', KEYS[3], offset .. '\n' .. epoch .. '\n' .. ARGV[2] .. '\n' .. ARGV[1])
return {offset, epoch}
