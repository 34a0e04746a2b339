-- Count an entry into a room from one client address, and say whether the address is within its
-- limit. The counter has a hash tag of its own (`{entry:<room>:<address>}`), so a room entered
-- from many addresses spreads over the cluster's slots.
--
-- KEYS[1] the address's counter
-- ARGV[1] window seconds, ARGV[2] entries per address per window
--
-- Returns 1 within the limit, 0 past it.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return 0 end
return 1
