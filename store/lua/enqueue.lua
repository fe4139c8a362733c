-- enqueue: append envelopes to a partition's inbound stream.
-- KEYS[1] inbound stream
-- ARGV[1] bound: client frames are refused once the stream holds this many
--         entries (0 = no bound); open/close events are always taken, so a
--         worker always sees a connection end.
-- ARGV[2..] encoded envelopes (byte 2 is the kind; 1 = client frame)
-- Returns one integer per envelope: 1 queued, 0 refused (queue full).
local bound = tonumber(ARGV[1])
local len = redis.call('XLEN', KEYS[1])
local res = {}
for i = 2, #ARGV do
  local e = ARGV[i]
  if bound > 0 and len >= bound and string.byte(e, 2) == 1 then
    res[#res + 1] = 0
  else
    redis.call('XADD', KEYS[1], '*', 'e', e)
    len = len + 1
    res[#res + 1] = 1
  end
end
return res
