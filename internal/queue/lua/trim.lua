-- trim: delete the entries of a partition's stream that every worker is
-- done with: below both the oldest entry still pending (taken, not
-- acknowledged) and the group's last delivered entry. Entries a worker took
-- but never received (a lost reply) stay pending, so they are kept.
-- KEYS[1] inbound stream; ARGV[1] consumer group
-- Returns the number of entries deleted.
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local last
for _, g in ipairs(groups) do
  local name, delivered
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
  end
  if name == ARGV[1] then last = delivered end
end
if not last or last == '0-0' then return 0 end
local p = redis.call('XPENDING', KEYS[1], ARGV[1])
local minid = last
if p[1] > 0 then minid = p[2] end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
