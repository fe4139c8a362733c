-- session_bind: bind a user id to a connection, farm-wide and atomically.
-- KEYS[1] the user's session hash
-- ARGV[1] gateway id; ARGV[2] connection id; ARGV[3] mode: "kick" replaces
-- an older binding, "refuse" keeps it and fails; ARGV[4] now (unix ms)
-- Returns {status, old gateway, old connection}: status 1 bound (old
-- fields set if another connection was replaced), 0 refused.
local old = redis.call('HMGET', KEYS[1], 'gw', 'conn')
local ogw, oconn = old[1], old[2]
if ogw and oconn == ARGV[2] then
  return {1, '', ''}
end
if ogw and ARGV[3] == 'refuse' then
  return {0, ogw, oconn}
end
redis.call('HSET', KEYS[1], 'gw', ARGV[1], 'conn', ARGV[2], 'at', ARGV[4])
if ogw then
  return {1, ogw, oconn}
end
return {1, '', ''}
