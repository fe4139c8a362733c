-- dead_requeue: put a dead letter back on its partition's inbound stream,
-- marked 'requeued', so that workers run it although its connection's
-- handled mark is past it (the worker marked it when it dead-lettered it).
-- KEYS[1] dead-letter stream; KEYS[2] inbound stream; ARGV[1] dead entry id
-- Returns the new inbound id, or false if there is no such dead letter.
local r = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #r == 0 then return false end
local f = r[1][2]
for i = 1, #f, 2 do
  if f[i] == 'e' then
    local id = redis.call('XADD', KEYS[2], '*', 'e', f[i + 1], 'requeued', '1')
    redis.call('XDEL', KEYS[1], ARGV[1])
    return id
  end
end
return false
