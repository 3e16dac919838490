--- ARGV: lease batch retention_s
-- ARGV: lease, batch, retention (s). Returns 1, or 0 when the lease is
-- not held. The sending mark stays (it is sticky). A cancelled job's batch
-- is dropped and its messages counted as cancelled.
local h = held(ARGV[1], ARGV[2], {'n', 'p'})
if not h then return 0 end
local n = tonumber(h[3])
local bk = P .. ':b:' .. ARGV[2]
local job = job_of(h[4]) or ''
redis.call('ZREM', P .. ':leases', ARGV[2])
redis.call('HINCRBY', COUNTS, 'leased', -n)
if redis.call('HGET', P .. ':job:' .. job, 'halted') == '1' then
  redis.call('DEL', bk)
  add_cancelled(job, n, ARGV[3])
  return 1
end
redis.call('HDEL', bk, 'l', 'd')
ready_push(job, ARGV[2], true)
redis.call('HINCRBY', COUNTS, 'ready', n)
return 1
