-- cron_claim: let one process of the farm start period ARGV[1] of a
-- periodic job; the winner's envelope enters the stream in the same step.
-- KEYS[1] the job's last-period key; KEYS[2] inbound stream
-- ARGV[1] period number; ARGV[2] envelope; ARGV[3] key lifetime (ms)
-- Returns 1 for the one caller that claimed the period, else 0.
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if last >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
return 1
