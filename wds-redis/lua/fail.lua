--- ARGV: job reason retention_s
-- ARGV: job, reason, retention (s). Ends a job's reading as failed unless
-- it is fully read already: `done`, `seq + 1` and the `failed` reason, with
-- the finish stamp if every line is accounted. Returns the job hash as
-- `REPORT` does (empty when unknown).
local job = ARGV[1]
local jk = P .. ':job:' .. job
local v = redis.call('HMGET', jk, 'seq', 'done', 'records', 'delivered', 'dead', 'invalid',
  'duplicate', 'finished_ms', 'line')
if not v[1] then return {} end
if v[2] ~= '1' then
  local fields = {'seq', tonumber(v[1]) + 1, 'done', 1, 'failed', ARGV[2]}
  local accounted = tonumber(v[4] or '0') + tonumber(v[5] or '0') + tonumber(v[6] or '0')
    + tonumber(v[7] or '0')
  finish(job, v[8], accounted == tonumber(v[3] or '0'), fields, ARGV[3], v[9])
  redis.call('HSET', jk, unpack(fields))
end
return redis.call('HGETALL', jk)
