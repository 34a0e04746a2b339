-- Delete one chat message: out of the recent messages (the subscribe snapshot), and into the
-- deleted set that recovery filters history with.
--
-- KEYS[1] history stream, KEYS[2] recent messages list, KEYS[3] deleted message ids set
-- ARGV[1] the message id (its stream offset), ARGV[2] the message JSON's start up to and
-- including the id's opening quote, ARGV[3] TTL seconds for the deleted set
--
-- Returns 1 when the message was known (in the recent list or the history), 2 when it was
-- deleted before, else 0.
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
    return 2
end
local prefix = ARGV[2] .. ARGV[1] .. '"'
local found = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if string.sub(item, 1, #prefix) == prefix then
        redis.call('LREM', KEYS[2], 1, item)
        found = 1
    end
end
if found == 0 then
    local entries = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-0', ARGV[1] .. '-0')
    if #entries == 1 then
        local fields = entries[1][2]
        for i = 1, #fields, 2 do
            if fields[i] == 'd' and string.sub(fields[i + 1], 1, #prefix) == prefix then
                found = 1
            end
        end
    end
end
if found == 1 then
    redis.call('SADD', KEYS[3], ARGV[1])
    redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return found
