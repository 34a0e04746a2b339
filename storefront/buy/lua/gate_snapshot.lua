-- What a process needs to refuse buy attempts on a drop the way gate_acquire.lua would.
--
-- KEYS[1] gate, KEYS[2] free, KEYS[3] buyers, KEYS[4] idempotency (as gate_acquire.lua)
-- ARGV[1] the most buyers + idempotency keys worth reading
--
-- Returns false (no gate, a missing drop, or too big), or one JSON object
-- (storefront.buy.refusals.GateState): {starts_ms, ends_ms, closed, limit, free,
-- holdings: {buyer: units}, seen: {digest: 1}}.
local g = redis.call('HMGET', KEYS[1], 'gen', 'starts_ms', 'ends_ms', 'closed', 'limit',
                     'missing')
if g[6] or not g[1] then return false end
if redis.call('HLEN', KEYS[3]) + redis.call('HLEN', KEYS[4]) > tonumber(ARGV[1]) then
    return false
end
local holdings, seen = {}, {}
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do holdings[flat[i]] = tonumber(flat[i + 1]) end
for _, digest in ipairs(redis.call('HKEYS', KEYS[4])) do seen[digest] = 1 end
return cjson.encode({starts_ms = tonumber(g[2]), ends_ms = tonumber(g[3]), closed = g[4] == '1',
                     limit = tonumber(g[5]), free = redis.call('SCARD', KEYS[2]),
                     holdings = holdings, seen = seen})
