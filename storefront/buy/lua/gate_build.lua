-- Build a drop's gate from a PostgreSQL snapshot, or reconcile it with one.
--
-- KEYS as gate_acquire.lua
-- ARGV[1] mode "fresh" (no gate: build one) or "reconcile" (rebuild in place, keeping in-flight
-- attempts younger than ARGV[9]); ARGV[2] expected gen and ARGV[3] expected v (reconcile: abort
-- when anything moved since the snapshot was taken); ARGV[4] gen of a fresh build;
-- ARGV[5] drop JSON {starts_ms, ends_ms, closed, limit, quantity, expire_at_ms};
-- ARGV[6] JSON list of units with a live claim; ARGV[7] JSON {buyer: live units};
-- ARGV[8] JSON {digest: fingerprint}; ARGV[9] in-flight entries older than this (ms) are
-- abandoned (their writer died).
--
-- Returns {"built", gen, abandoned}, {"exists"}, {"absent"} or {"changed"}.
local gen
local v = 0
if ARGV[1] == 'fresh' then
    local cur = redis.call('HMGET', KEYS[1], 'gen', 'missing')
    if cur[1] and not cur[2] then return {'exists'} end
    gen = ARGV[4]
    -- in-flight entries of a lost gate are void: their units are free unless PostgreSQL says not
    redis.call('DEL', KEYS[5])
else
    local cur = redis.call('HMGET', KEYS[1], 'gen', 'v')
    if not cur[1] then return {'absent'} end
    if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then return {'changed'} end
    gen = cur[1]
    v = tonumber(cur[2]) + 1
end
local drop = cjson.decode(ARGV[5])
local taken = {}
for _, u in ipairs(cjson.decode(ARGV[6])) do taken[u] = true end
local buyers = cjson.decode(ARGV[7])
local idem = cjson.decode(ARGV[8])
local abandoned = 0
if ARGV[1] == 'reconcile' then
    local entries = redis.call('HGETALL', KEYS[5])
    for i = 1, #entries, 2 do
        local e = cjson.decode(entries[i + 1])
        if e[1] < tonumber(ARGV[9]) then
            redis.call('HDEL', KEYS[5], entries[i])
            abandoned = abandoned + 1
        else
            for _, u in ipairs(e[5]) do taken[u] = true end
            buyers[e[2]] = (buyers[e[2]] or 0) + #e[5]
            if e[3] ~= '' then idem[e[3]] = e[4] end
        end
    end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local batch = {}
for u = 1, drop.quantity do
    if not taken[u] then
        batch[#batch + 1] = u
        if #batch == 1000 then
            redis.call('SADD', KEYS[2], unpack(batch))
            batch = {}
        end
    end
end
if #batch > 0 then redis.call('SADD', KEYS[2], unpack(batch)) end
for buyer, n in pairs(buyers) do
    if n > 0 then redis.call('HSET', KEYS[3], buyer, n) end
end
for digest, fp in pairs(idem) do redis.call('HSET', KEYS[4], digest, fp) end
redis.call('HSET', KEYS[1], 'gen', gen, 'v', v, 'starts_ms', drop.starts_ms,
           'ends_ms', drop.ends_ms, 'closed', drop.closed, 'limit', drop.limit,
           'quantity', drop.quantity, 'expire_at_ms', drop.expire_at_ms)
for i = 1, 5 do redis.call('PEXPIREAT', KEYS[i], drop.expire_at_ms) end
return {'built', gen, abandoned}
