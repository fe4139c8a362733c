-- recent.lua: a room's latest lines, oldest first.
-- KEYS[1] the room's lines, ARGV[1] how many
return redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
