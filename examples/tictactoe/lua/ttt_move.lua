-- ttt_move: a player marks a cell. The only way a board changes besides a
-- forfeit (ttt_forfeit): it checks the match runs, the player is on turn
-- and the cell is free, then marks it, detects a line or a full board, and
-- passes the turn.
-- KEYS[1] the match's board hash
-- ARGV[1] the player's user id; ARGV[2] cell, 0-8 row by row; ARGV[3] now
-- (unix ms); ARGV[4] turn length (ms); ARGV[5] the next turn's timer id
-- Returns {status, old timer id, field, value, ...}: status "ok",
-- "no_match", "over", "not_player", "not_your_turn", "bad_cell" or
-- "taken" (nothing changed but for "ok"); the old timer id is the one the
-- move made pointless (to cancel), then the match's fields.
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
local m = redis.call('HMGET', KEYS[1], 'x', 'o', 'board', 'turn', 'moves', 'winner', 'timer')
local x, o, board, turn, moves, winner, timer = m[1], m[2], m[3], m[4], tonumber(m[5]), m[6], m[7]
if winner ~= '' then
  return reply('over', '')
end
local side
if ARGV[1] == x then
  side = 'x'
elseif ARGV[1] == o then
  side = 'o'
else
  return reply('not_player', '')
end
if side ~= turn then
  return reply('not_your_turn', '')
end
local cell = tonumber(ARGV[2])
if cell == nil or cell ~= math.floor(cell) or cell < 0 or cell > 8 then
  return reply('bad_cell', '')
end
local i = cell + 1
if board:sub(i, i) ~= '.' then
  return reply('taken', '')
end
board = board:sub(1, i - 1) .. side .. board:sub(i + 1)
moves = moves + 1
local lines = {{1, 2, 3}, {4, 5, 6}, {7, 8, 9}, {1, 4, 7}, {2, 5, 8}, {3, 6, 9}, {1, 5, 9}, {3, 5, 7}}
local line = ''
for _, l in ipairs(lines) do
  local a, b, c = board:sub(l[1], l[1]), board:sub(l[2], l[2]), board:sub(l[3], l[3])
  if a == side and b == side and c == side then
    line = (l[1] - 1) .. ',' .. (l[2] - 1) .. ',' .. (l[3] - 1)
    break
  end
end
if line ~= '' then
  redis.call('HSET', KEYS[1], 'board', board, 'moves', moves, 'winner', side, 'reason', 'line',
    'line', line, 'deadline', 0, 'timer', '')
elseif moves == 9 then
  redis.call('HSET', KEYS[1], 'board', board, 'moves', moves, 'winner', 'draw', 'reason', 'draw',
    'deadline', 0, 'timer', '')
else
  local next = 'o'
  if side == 'o' then
    next = 'x'
  end
  redis.call('HSET', KEYS[1], 'board', board, 'moves', moves, 'turn', next,
    'deadline', tonumber(ARGV[3]) + tonumber(ARGV[4]), 'timer', ARGV[5])
end
return reply('ok', timer)
