-- Release a gate's build lock only if we still own it.
--
-- KEYS[1] the lock, ARGV[1] the owner's token
-- Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
