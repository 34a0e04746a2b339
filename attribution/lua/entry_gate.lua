-- Rate-limit an entry into a room per visitor, and deduplicate the visitor's repeated entry
-- through the same link (the address's limit is entry_address.lua, checked first). The keys
-- have the visitor's own hash tag (`{entry:<room>:<visitor>}`), not the room's: a room of a
-- million visitors is a million slots spread over the cluster, not one hot slot.
--
-- KEYS[1] the visitor's counter, KEYS[2] the visitor's last entry target in the room
-- ARGV[1] entry target (link id, or "-" for a plain entry), ARGV[2] window seconds,
-- ARGV[3] entries per visitor per window, ARGV[4] seconds during which a repeated entry is a
-- duplicate
--
-- Returns 0 when limited, 1 to record the entry, 2 when it repeats the visitor's last entry.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[3]) then return 0 end
local previous = redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[4], 'GET')
if previous == ARGV[1] then return 2 end
return 1
