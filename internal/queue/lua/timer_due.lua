-- timer_due: move timers that fell due into the partition's stream, in one
-- step, so each fires exactly once whoever runs this.
-- KEYS[1] timers sorted set; KEYS[2] timer data hash; KEYS[3] inbound stream
-- ARGV[1] now (unix ms); ARGV[2] most to move
-- Returns the number moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  local e = redis.call('HGET', KEYS[2], id)
  if e then
    redis.call('XADD', KEYS[3], '*', 'e', e)
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return #due
