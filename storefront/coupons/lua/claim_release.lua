-- A claim attempt whose PostgreSQL write did not happen: its number goes back.
--
-- KEYS as claim_acquire.lua
-- ARGV[1] gen the number came from, ARGV[2] claim number ("" = none: it is claimed in
-- PostgreSQL after all), ARGV[3] user, ARGV[4] idempotency digest to forget ("" = keep)
--
-- A gate rebuilt since the attempt read PostgreSQL after it, so it is left alone.
-- Returns 1, or 0 when nothing was changed.
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen or gen ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('SADD', KEYS[2], ARGV[2]) end
local left = redis.call('HINCRBY', KEYS[3], ARGV[3], -1)
if left <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HDEL', KEYS[4], ARGV[4]) end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
