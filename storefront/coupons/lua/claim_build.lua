-- Build a coupon's gate from a PostgreSQL snapshot (after Redis lost it, or on first use).
--
-- KEYS as claim_acquire.lua
-- ARGV[1] gen of this build; ARGV[2] coupon JSON {starts_ms, ends_ms, limit, quantity,
-- expire_at_ms} or "" when there is no such coupon; ARGV[3] JSON list of claimed numbers;
-- ARGV[4] JSON {user: claims}; ARGV[5] JSON {digest: fingerprint}; ARGV[6] ms a "missing"
-- mark lasts
--
-- Returns "built", "exists" (another process built it first) or "missing".
local cur = redis.call('HMGET', KEYS[1], 'gen', 'missing')
if cur[1] and not cur[2] then return 'exists' end
if ARGV[2] == '' then
    redis.call('HSET', KEYS[1], 'missing', '1')
    redis.call('PEXPIRE', KEYS[1], ARGV[6])
    return 'missing'
end
local coupon = cjson.decode(ARGV[2])
local taken = {}
for _, n in ipairs(cjson.decode(ARGV[3])) do taken[n] = true end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local batch = {}
for n = 1, coupon.quantity do
    if not taken[n] then
        batch[#batch + 1] = n
        if #batch == 1000 then
            redis.call('SADD', KEYS[2], unpack(batch))
            batch = {}
        end
    end
end
if #batch > 0 then redis.call('SADD', KEYS[2], unpack(batch)) end
for user, n in pairs(cjson.decode(ARGV[4])) do
    if n > 0 then redis.call('HSET', KEYS[3], user, n) end
end
for digest, fp in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', KEYS[4], digest, fp) end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'v', 0, 'starts_ms', coupon.starts_ms,
           'ends_ms', coupon.ends_ms, 'limit', coupon.limit, 'quantity', coupon.quantity,
           'expire_at_ms', coupon.expire_at_ms)
for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], coupon.expire_at_ms) end
return 'built'
