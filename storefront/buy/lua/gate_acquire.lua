-- One buy attempt at a drop's flash-sale gate. Atomically: refuse inactive, over-limit and
-- sold-out attempts, or pop units and record them as in flight for this attempt.
--
-- KEYS[1] gate hash, KEYS[2] free set, KEYS[3] buyers hash, KEYS[4] idempotency hash,
-- KEYS[5] in-flight hash (storefront.buy.gate.gate_keys; one hash tag, one slot)
-- ARGV[1] buyer id, ARGV[2] quantity, ARGV[3] idempotency digest ("" = none),
-- ARGV[4] request fingerprint, ARGV[5] attempt token,
-- ARGV[6] mode: "buy" checks the sale window and the per-buyer limit; "late" (a payment that
--   arrived after its hold expired) only takes free units
--
-- Returns one JSON verdict (storefront.buy.gate.Verdict, tagged by "verdict"):
-- {"verdict":"absent"} (build the gate first), {"verdict":"missing"} (no such drop),
-- {"verdict":"seen","fingerprint":...}, {"verdict":"not_active","status":...},
-- {"verdict":"limit_reached","holding":n,"limit":n}, {"verdict":"sold_out","free":n},
-- {"verdict":"ok","gen":...,"token":...,"units":[...]}.
local g = redis.call('HMGET', KEYS[1], 'gen', 'starts_ms', 'ends_ms', 'closed', 'limit',
                     'missing', 'expire_at_ms')
if g[6] then return cjson.encode({verdict = 'missing'}) end
if not g[1] then return cjson.encode({verdict = 'absent'}) end
local q = tonumber(ARGV[2])
if ARGV[3] ~= '' then
    local seen = redis.call('HGET', KEYS[4], ARGV[3])
    if seen then return cjson.encode({verdict = 'seen', fingerprint = seen}) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[6] == 'buy' then
    local status
    if g[4] == '1' then
        status = 'closed'
    elseif now < tonumber(g[2]) then
        status = 'scheduled'
    elseif now >= tonumber(g[3]) then
        status = 'ended'
    end
    if status then return cjson.encode({verdict = 'not_active', status = status}) end
    local holding = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
    local limit = tonumber(g[5])
    if holding + q > limit then
        return cjson.encode({verdict = 'limit_reached', holding = holding, limit = limit})
    end
end
local free = redis.call('SCARD', KEYS[2])
if free < q then return cjson.encode({verdict = 'sold_out', free = free}) end
local units = redis.call('SPOP', KEYS[2], q)
for i = 1, #units do units[i] = tonumber(units[i]) end
redis.call('HINCRBY', KEYS[3], ARGV[1], q)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[4]) end
redis.call('HSET', KEYS[5], ARGV[5], cjson.encode({now, ARGV[1], ARGV[3], ARGV[4], units}))
redis.call('HINCRBY', KEYS[1], 'v', 1)
for i = 3, 5 do redis.call('PEXPIREAT', KEYS[i], g[7]) end
return cjson.encode({verdict = 'ok', gen = g[1], token = ARGV[5], units = units})
