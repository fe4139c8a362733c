-- dead_letter: copy an envelope that keeps failing to the dead-letter
-- stream and, in the same step, mark it handled for its connection, so it
-- is neither lost nor run again. The worker then acknowledges its entry as
-- usual (a bundle's other envelopes still run).
-- KEYS[1] dead-letter stream; KEYS[2] handled marks of the envelope's
-- gateway on this partition
-- ARGV[1] entry id; ARGV[2] the envelope's index in the entry;
-- ARGV[3] envelope; ARGV[4] deliveries; ARGV[5] reason;
-- ARGV[6] connection id ('' for none); ARGV[7] its sequence number
-- Returns the id of the dead-letter entry.
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[3], 'from', ARGV[1],
  'index', ARGV[2], 'deliveries', ARGV[4], 'reason', ARGV[5])
if ARGV[6] ~= '' and tonumber(ARGV[7]) > 0 then
  local old = tonumber(redis.call('HGET', KEYS[2], ARGV[6]) or '0')
  if tonumber(ARGV[7]) > old then
    redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
  end
end
return id
