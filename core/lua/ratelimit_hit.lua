-- Count one hit against a subject's counter for the current window.
--
-- KEYS[1] the counter (`{rl:<limit>:<subject>}:<window start>`)
-- ARGV[1] window seconds
--
-- Returns the count including this hit. Refused hits count too, so a client hammering a limit
-- stays limited for the rest of the window.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
