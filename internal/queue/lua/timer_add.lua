-- timer_add: schedule an envelope to enter the partition's stream later.
-- KEYS[1] timers sorted set; KEYS[2] timer data hash
-- ARGV[1] timer id; ARGV[2] due time (unix ms); ARGV[3] envelope
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
