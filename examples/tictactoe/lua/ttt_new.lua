-- ttt_new: start a tic-tac-toe match; x moves first.
-- KEYS[1] the match's board hash
-- ARGV[1] x's user id; ARGV[2] o's user id; ARGV[3] now (unix ms);
-- ARGV[4] turn length (ms); ARGV[5] the first turn's timer id;
-- ARGV[6] time to live of the match (seconds)
-- Returns {status, '', field, value, ...}: status "ok", or "exists" (the id
-- is taken; nothing changed), then the match's fields.
local function reply(status, old)
  local out = {status, old}
  for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do
    out[#out + 1] = v
  end
  return out
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return reply('exists', '')
end
redis.call('HSET', KEYS[1], 'x', ARGV[1], 'o', ARGV[2], 'board', '.........', 'turn', 'x',
  'moves', 0, 'winner', '', 'reason', '', 'line', '',
  'deadline', tonumber(ARGV[3]) + tonumber(ARGV[4]), 'timer', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return reply('ok', '')
