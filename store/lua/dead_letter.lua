-- dead_letter: move an entry that keeps failing from the inbound stream to
-- the dead-letter stream, in one step, so it is neither lost nor retried.
-- KEYS[1] inbound stream; KEYS[2] dead-letter stream
-- ARGV[1] group; ARGV[2] entry id; ARGV[3] envelope; ARGV[4] deliveries;
-- ARGV[5] reason
-- Returns the id of the dead-letter entry.
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[3], 'from', ARGV[2],
  'deliveries', ARGV[4], 'reason', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
