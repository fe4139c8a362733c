-- say.lua: number a room's line and keep it in the room's history.
-- KEYS[1] the room's line counter, KEYS[2] its latest lines (a list)
-- ARGV[1] the line, ARGV[2] how many lines to keep
-- Returns the line's number: 1, 2, 3... per room, each given once.
local n = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], n .. ' ' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
return n
