-- trim: delete the entries of a partition's stream that every worker is
-- done with: below both the oldest entry still pending (taken, not
-- acknowledged) and the group's last delivered entry. Entries a worker took
-- but never received (a lost reply) stay pending, so they are kept. When
-- nothing waits, the partition's frame count is zeroed, so that it cannot
-- drift for good (a worker that died between acknowledging and counting).
-- KEYS[1] inbound stream; KEYS[2] the partition's queued-frames count
-- ARGV[1] consumer group
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
local n = redis.call('XTRIM', KEYS[1], 'MINID', minid)
-- Nothing pending and nothing after the last delivered entry: no frames
-- wait.
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local idle = p[1] == 0 and (#top == 0 or top[1][1] == last)
if idle or tonumber(redis.call('GET', KEYS[2]) or '0') < 0 then
  redis.call('SET', KEYS[2], 0)
end
return n
