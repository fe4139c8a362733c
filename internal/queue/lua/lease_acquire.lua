-- lease_acquire: take a free lease, renew the caller's, or take the lease
-- of a worker known dead.
-- KEYS[1] owner key; ARGV[1] worker id; ARGV[2] lease in ms;
-- ARGV[3..] workers dead (live_round.lua): their leases are free.
-- Returns 1 if the caller holds the lease now, 0 if another worker does.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur ~= false then
  local dead = false
  for i = 3, #ARGV do
    if ARGV[i] == cur then dead = true end
  end
  if not dead then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
