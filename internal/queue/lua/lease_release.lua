-- lease_release: give a partition lease up, if the caller still holds it.
-- KEYS[1] owner key; ARGV[1] worker id
-- Returns 1 if released, 0 if the lease was not the caller's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
