-- lease_acquire: take or renew a partition lease.
-- KEYS[1] owner key; ARGV[1] worker id; ARGV[2] lease in ms
-- Returns 1 if the caller holds the lease now, 0 if another worker does.
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
