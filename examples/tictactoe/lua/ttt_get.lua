-- ttt_get: read a tic-tac-toe match.
-- KEYS[1] the match's board hash
-- Returns the match's fields and values (HGETALL), empty if there is none.
return redis.call('HGETALL', KEYS[1])
