-- live_round: renew the caller's liveness and tell who is alive and who died.
-- KEYS[1] liveness registry (zset: worker -> its last renewal, the
-- caller's clock in unix ms); each worker's mark is the string
-- KEYS[1]..':'..worker (same slot), set with PX liveness: Redis's own
-- clock says when it runs out, so the workers' clocks never have to agree.
-- ARGV[1] worker; ARGV[2] liveness in ms; ARGV[3] forget-after in ms;
-- ARGV[4] the caller's clock in unix ms
-- Returns {live workers, dead workers}: dead ones have no mark any more;
-- those that last renewed over forget-after ago are deleted (their
-- partitions' leases, which they stopped renewing too, ran out by then).
-- Only commands of the farm's ACL role (docs/security.md): no TIME.
local now = tonumber(ARGV[4])
redis.call('SET', KEYS[1] .. ':' .. ARGV[1], '1', 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
local all = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf', 'WITHSCORES')
local live, dead = {}, {}
for i = 1, #all, 2 do
  local w = all[i]
  if redis.call('EXISTS', KEYS[1] .. ':' .. w) == 1 then
    live[#live + 1] = w
  elseif tonumber(all[i + 1]) < now - tonumber(ARGV[3]) then
    redis.call('ZREM', KEYS[1], w)
  else
    dead[#dead + 1] = w
  end
end
return {live, dead}
