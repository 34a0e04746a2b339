-- One claim attempt at a coupon's gate. Atomically: refuse a coupon outside its claim window,
-- a user at their limit and a coupon all claimed, or pop a claim number for this attempt.
--
-- KEYS[1] gate hash, KEYS[2] free set (claim numbers nobody holds), KEYS[3] users hash (user ->
-- claims), KEYS[4] idempotency hash (digest -> fingerprint); storefront.coupons.gate.gate_keys:
-- all under the room's hash tag `{room:ID}`, one slot
-- ARGV[1] user id, ARGV[2] idempotency digest, ARGV[3] request fingerprint
--
-- Returns one JSON verdict (storefront.coupons.gate.Verdict, tagged by "verdict"):
-- {"verdict":"absent"} (build the gate first), {"verdict":"missing"} (no such coupon),
-- {"verdict":"seen","fingerprint":...}, {"verdict":"not_active","status":...},
-- {"verdict":"limit_reached","limit":n}, {"verdict":"gone"},
-- {"verdict":"ok","gen":...,"claim_no":n}.
local g = redis.call('HMGET', KEYS[1], 'gen', 'starts_ms', 'ends_ms', 'limit', 'missing',
                     'expire_at_ms')
if g[5] then return cjson.encode({verdict = 'missing'}) end
if not g[1] then return cjson.encode({verdict = 'absent'}) end
local seen = redis.call('HGET', KEYS[4], ARGV[2])
if seen then return cjson.encode({verdict = 'seen', fingerprint = seen}) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(g[2]) then return cjson.encode({verdict = 'not_active', status = 'scheduled'}) end
if now >= tonumber(g[3]) then return cjson.encode({verdict = 'not_active', status = 'ended'}) end
local holding = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if holding >= tonumber(g[4]) then
    return cjson.encode({verdict = 'limit_reached', limit = tonumber(g[4])})
end
local no = redis.call('SPOP', KEYS[2])
if not no then return cjson.encode({verdict = 'gone'}) end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'v', 1)
return cjson.encode({verdict = 'ok', gen = g[1], claim_no = tonumber(no)})
