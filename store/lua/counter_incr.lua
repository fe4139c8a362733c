-- counter_incr: add ARGV[1] to the counter KEYS[1] and return the new value.
return redis.call('INCRBY', KEYS[1], ARGV[1])
