-- Units go back on sale: an attempt whose write failed, an expired hold, a refund.
--
-- KEYS as gate_acquire.lua
-- ARGV[1] attempt token ("" = none), ARGV[2] gen the units came from ("" = released in
-- PostgreSQL already, so they are free whatever gate is current), ARGV[3] buyer, ARGV[4] units
-- to take off the buyer's count, ARGV[5] idempotency digest to forget ("" = none),
-- ARGV[6...] units
--
-- A gate rebuilt since the attempt read PostgreSQL after it, so it is left alone.
-- Returns 1, or 0 when nothing was changed.
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return 0 end
if ARGV[2] ~= '' and gen ~= ARGV[2] then return 0 end
if ARGV[1] ~= '' then redis.call('HDEL', KEYS[5], ARGV[1]) end
if #ARGV >= 6 then redis.call('SADD', KEYS[2], unpack(ARGV, 6)) end
local left = redis.call('HINCRBY', KEYS[3], ARGV[3], -tonumber(ARGV[4]))
if left <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
if ARGV[5] ~= '' then redis.call('HDEL', KEYS[4], ARGV[5]) end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
