-- What the cheap health check of a gate needs, in one round trip.
--
-- KEYS as gate_acquire.lua
-- Returns {gen or false, v, free count, in-flight units, oldest in-flight ms}.
local g = redis.call('HMGET', KEYS[1], 'gen', 'v')
if not g[1] then return {false, 0, 0, 0, 0} end
local units, oldest = 0, 0
local entries = redis.call('HVALS', KEYS[5])
for _, raw in ipairs(entries) do
    local e = cjson.decode(raw)
    units = units + #e[5]
    if oldest == 0 or e[1] < oldest then oldest = e[1] end
end
return {g[1], tonumber(g[2]), redis.call('SCARD', KEYS[2]), units, oldest}
