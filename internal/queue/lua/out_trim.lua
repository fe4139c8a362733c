-- out_trim: drop from a gateway's outbound list the messages it handed
-- out since its last take, once, and number the next take. The messages
-- themselves never pass through Lua: the gateway reads them with an LRANGE
-- of the list's tail (the oldest) pipelined after this call, and they stay
-- in the list until the next call drops them, so a take whose reply was
-- lost is read again instead of vanishing.
-- KEYS[1] outbound list; KEYS[2] the number of the gateway's last take
-- ARGV[1] the number of the gateway's last take, as it received it (0 at
-- start); ARGV[2] how many messages it handed out since (they are the last
-- ARGV[2] at the tail: workers push at the head); ARGV[3] a random number
-- to count from when there is none (new gateway, or Redis lost its data)
-- Returns the new number. The messages are dropped only if the number is
-- still ARGV[1]: if a call dropped them but its reply was lost, the number
-- moved on, and the same call made again drops nothing more.
local cur = tonumber(redis.call('GET', KEYS[2]))
local n = tonumber(ARGV[2])
if cur and cur == tonumber(ARGV[1]) and n > 0 then
  redis.call('LTRIM', KEYS[1], 0, -n - 1)
end
cur = (cur or tonumber(ARGV[3])) + 1
redis.call('SET', KEYS[2], cur)
return cur
