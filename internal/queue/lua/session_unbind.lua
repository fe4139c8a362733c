-- session_unbind: remove a user's binding if it still names the given
-- connection (a newer login elsewhere is left alone).
-- KEYS[1] the user's session hash; ARGV[1] connection id, or "" to match
-- any connection of gateway ARGV[2] (a dead gateway's sessions)
-- Returns 1 if removed, 0 if not.
local cur = redis.call('HMGET', KEYS[1], 'gw', 'conn')
if not cur[1] then return 0 end
if (ARGV[1] ~= '' and cur[2] == ARGV[1]) or (ARGV[1] == '' and cur[1] == ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
