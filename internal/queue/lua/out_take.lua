-- out_take: take a batch of a gateway's outbound messages, so that a batch
-- whose reply is lost (Redis or the connection died) is handed out again
-- instead of vanishing.
-- KEYS[1] outbound list; KEYS[2] the batch in transit (list);
-- KEYS[3] the batch's number
-- ARGV[1] number of the last batch the gateway received (0 at start);
-- ARGV[2] most messages to take; ARGV[3] a random number to start counting
-- from when there is no count (new gateway, or Redis lost its data), so
-- numbers of an older count are never mistaken for new ones
-- Returns {batch number, messages...}. The same batch comes back until the
-- gateway names its number, which is its acknowledgement. A message the
-- gateway took with BLMOVE into the transit list is acknowledged the same
-- way (the number is unchanged); after a failed BLMOVE the gateway names
-- -1 and gets the transit list again.
local cur = tonumber(redis.call('GET', KEYS[3]))
if not cur then
  cur = tonumber(ARGV[3])
  redis.call('SET', KEYS[3], cur)
end
if cur ~= tonumber(ARGV[1]) and redis.call('LLEN', KEYS[2]) > 0 then
  local again = redis.call('LRANGE', KEYS[2], 0, -1)
  table.insert(again, 1, cur)
  return again
end
redis.call('DEL', KEYS[2])
local msgs = redis.call('RPOP', KEYS[1], tonumber(ARGV[2]))
if not msgs then
  return {cur}
end
cur = cur + 1
redis.call('SET', KEYS[3], cur)
redis.call('RPUSH', KEYS[2], unpack(msgs))
table.insert(msgs, 1, cur)
return msgs
