-- A claim's PostgreSQL write committed: its number is taken there now.
--
-- KEYS as claim_acquire.lua
-- ARGV[1] gen the number came from, ARGV[2] claim number, ARGV[3] idempotency digest,
-- ARGV[4] fingerprint
--
-- When the gate was rebuilt meanwhile, the rebuild may have read PostgreSQL before the commit
-- and put the number back in the free set: take it out again and remember the key. (The
-- user's count is left as the rebuild made it: an undercount only sends an attempt on to
-- PostgreSQL, whose CHECK refuses it.)
-- Returns the free numbers left (what `coupon.remaining` shows), or -1 when there is no gate.
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return -1 end
if gen ~= ARGV[1] then
    redis.call('SREM', KEYS[2], ARGV[2])
    redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return redis.call('SCARD', KEYS[2])
