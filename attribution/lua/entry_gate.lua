-- Rate-limit an entry into a room per client address and per visitor, and deduplicate the
-- visitor's repeated entry through the same link. All keys live under the room's hash tag.
--
-- KEYS[1] the address's counter, KEYS[2] the visitor's counter, KEYS[3] the visitor's last
--   entry target in the room
-- ARGV[1] entry target (link id, or "-" for a plain entry), ARGV[2] window seconds,
-- ARGV[3] entries per address per window, ARGV[4] entries per visitor per window,
-- ARGV[5] seconds during which a repeated entry is a duplicate
--
-- Returns 0 when limited, 1 to record the entry, 2 when it repeats the visitor's last entry.
local function hit(key)
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('EXPIRE', key, ARGV[2]) end
    return n
end
if hit(KEYS[1]) > tonumber(ARGV[3]) or hit(KEYS[2]) > tonumber(ARGV[4]) then return 0 end
local previous = redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[5], 'GET')
if previous == ARGV[1] then return 2 end
return 1
