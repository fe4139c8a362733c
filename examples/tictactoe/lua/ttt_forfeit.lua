-- ttt_forfeit: end a running tic-tac-toe match, the other side winning:
-- the player on turn let the turn timer run out, or a player resigned.
-- KEYS[1] the match's board hash
-- ARGV[1] the losing player's user id, or "" for the player on turn;
-- ARGV[2] the number of moves the turn timer was set at, or -1 for any (a
-- timer set before a later move is stale); ARGV[3] the reason ("timeout",
-- "resign")
-- Returns {status, old timer id, field, value, ...}: status "ok",
-- "no_match", "over", "not_player" or "stale" (nothing changed but for
-- "ok"), the turn timer that is now pointless, then the match's fields.
local function reply(status, old)
  local out = {status, old}
  for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do
    out[#out + 1] = v
  end
  return out
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_match', ''}
end
local m = redis.call('HMGET', KEYS[1], 'x', 'o', 'turn', 'moves', 'winner', 'timer')
local x, o, turn, moves, winner, timer = m[1], m[2], m[3], tonumber(m[4]), m[5], m[6]
if winner ~= '' then
  return reply('over', '')
end
local want = tonumber(ARGV[2])
if want >= 0 and want ~= moves then
  return reply('stale', '')
end
local loser = turn
if ARGV[1] == x then
  loser = 'x'
elseif ARGV[1] == o then
  loser = 'o'
elseif ARGV[1] ~= '' then
  return reply('not_player', '')
end
local w = 'x'
if loser == 'x' then
  w = 'o'
end
redis.call('HSET', KEYS[1], 'winner', w, 'reason', ARGV[3], 'deadline', 0, 'timer', '')
return reply('ok', timer)
