-- Record one hub node's viewer count of a room and keep the room's total, in O(log nodes): the
-- total moves by this node's change (and by the counts of nodes that stopped reporting), it is
-- never re-summed over every node's field, so N nodes reporting once a second cost O(N log N)
-- a second, not O(N^2). The total is announced at most once per interval, by the first report
-- that finds it differs from the one announced, so N nodes never announce N times a second. The
-- interval grows with the total (each announcement is a write to every viewer): total * 1000 /
-- ARGV[7] ms, within [ARGV[5], ARGV[6]].
--
-- KEYS[1] the room's viewers hash: `c:<node>` = that node's count, `sum` = the total,
--   `shown` / `shown_at` = the total last announced and when (ms)
-- KEYS[2] the room's report times, a sorted set: node -> ms of its last report
-- ARGV[1] node id, ARGV[2] this node's count, ARGV[3] a node silent this many ms is gone,
-- ARGV[4] key TTL seconds, ARGV[5] and ARGV[6] the least and the most ms between two
-- announcements, ARGV[7] count frames a second the room's announcements may cost
--
-- Returns {total, announce, pending}: announce = 1 when the caller publishes the total now;
-- pending = 1 when the total differs from the one announced (the caller reports again soon).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node, count = ARGV[1], tonumber(ARGV[2])
local delta = count - tonumber(redis.call('HGET', KEYS[1], 'c:' .. node) or '0')
if count > 0 then
    redis.call('HSET', KEYS[1], 'c:' .. node, count)
    redis.call('ZADD', KEYS[2], now, node)
else
    redis.call('HDEL', KEYS[1], 'c:' .. node)
    redis.call('ZREM', KEYS[2], node)
end
-- nodes that stopped reporting (died): usually none, found in O(log nodes)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]), 'LIMIT', 0, 64)
for _, other in ipairs(gone) do
    delta = delta - tonumber(redis.call('HGET', KEYS[1], 'c:' .. other) or '0')
    redis.call('HDEL', KEYS[1], 'c:' .. other)
    redis.call('ZREM', KEYS[2], other)
end
local total = redis.call('HINCRBY', KEYS[1], 'sum', delta)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local shown = tonumber(redis.call('HGET', KEYS[1], 'shown') or '0')
if total == shown then
    return {total, 0, 0}
end
local shown_at = tonumber(redis.call('HGET', KEYS[1], 'shown_at') or '0')
local every = math.floor(total * 1000 / tonumber(ARGV[7]))
every = math.min(tonumber(ARGV[6]), math.max(tonumber(ARGV[5]), every))
if now - shown_at >= every then
    redis.call('HSET', KEYS[1], 'shown', total, 'shown_at', now)
    return {total, 1, 0}
end
return {total, 0, 1}
