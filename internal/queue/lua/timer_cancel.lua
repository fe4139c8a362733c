-- timer_cancel: drop a timer that has not fired yet.
-- KEYS[1] timers sorted set; KEYS[2] timer data hash; ARGV[1] timer id
-- Returns 1 if it was pending, 0 if it fired already or never existed.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
