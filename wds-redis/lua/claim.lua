--- ARGV: identity job meta detail_limit order
-- ARGV: identity, job id, meta json, detail limit (rejected and dead lines
-- kept in detail, fixed for the job's life), the job's claim order among
-- the deployment's (`''`: the next of this shard's counter; a deployment of
-- several shards takes it from shard 0's). Returns `{fresh, job, meta}`.
local claims = P .. ':claims'
local job = redis.call('HGET', claims, ARGV[1])
if job then
  return {0, job, redis.call('HGET', P .. ':job:' .. job, 'meta') or ''}
end
job = ARGV[2]
local jk = P .. ':job:' .. job
redis.call('HSET', claims, ARGV[1], job)
if redis.call('EXISTS', jk) == 1 then
  -- Two identities with one 64-bit job id: never reset the existing job.
  return {0, job, redis.call('HGET', jk, 'meta') or ''}
end
redis.call('HSET', jk, 'meta', ARGV[3], 'seq', 0, 'byte', 0, 'line', 0, 'records', 0,
  'done', 0, 'enqueued', 0, 'delivered', 0, 'dead', 0, 'in_doubt', 0, 'permanent', 0,
  'exhausted', 0, 'invalid', 0,
  'duplicate', 0, 'detail', ARGV[4])
local order = ARGV[5]
if order == '' then order = redis.call('INCR', P .. ':jobno') end
redis.call('ZADD', P .. ':jobs', order, job)
return {1, job, ARGV[3]}
