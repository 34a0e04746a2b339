-- A buy attempt's PostgreSQL write committed: its units are claimed there now.
--
-- KEYS as gate_acquire.lua
-- ARGV[1] attempt token, ARGV[2] gen the units came from, ARGV[3] idempotency digest,
-- ARGV[4] fingerprint, ARGV[5...] units
--
-- When the gate was rebuilt meanwhile, the rebuild may have read PostgreSQL before the commit
-- and put our units back in the free set: take them out again and remember the key. (The
-- buyer's count is left as the rebuild made it: an undercount only sends an attempt on to
-- PostgreSQL, whose CHECK refuses it.)
-- Returns 1, or 0 when there is no gate.
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return 0 end
if gen == ARGV[2] then
    redis.call('HDEL', KEYS[5], ARGV[1])
else
    if #ARGV >= 5 then redis.call('SREM', KEYS[2], unpack(ARGV, 5)) end
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[4]) end
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
