--- ARGV: action job retention_s
-- ARGV: action (`pause`, `resume`, `cancel`), job, retention (s).
-- Returns `{'ok', {field, value…}}` (the job hash after it), `{'unknown'}`
-- or `{'illegal', 'cancelled' | 'finished'}` (see `wds_core::Action::check`).
--
-- Pause takes the job out of `:turns`, resume puts it back when it has
-- ready batches. Cancel drops its ready batches and scheduled retries,
-- counts their messages as cancelled, and ends its reading as `FAIL` does.
local action, job = ARGV[1], ARGV[2]
local jk, rk = P .. ':job:' .. job, P .. ':ready:' .. job
local v = redis.call('HMGET', jk, 'seq', 'done', 'records', 'delivered', 'dead', 'invalid',
  'duplicate', 'cancelled', 'halted', 'finished_ms', 'line')
if not v[1] then return {'unknown'} end
local cancelled = tonumber(v[8] or '0')
local accounted = tonumber(v[4]) + tonumber(v[5]) + tonumber(v[6]) + tonumber(v[7]) + cancelled
if v[9] == '1' then
  if action ~= 'cancel' then return {'illegal', 'cancelled'} end
  return {'ok', redis.call('HGETALL', jk)}
end
if v[2] == '1' and accounted == tonumber(v[3]) then return {'illegal', 'finished'} end
redis.call('LREM', TURNS, 0, job)
if action == 'pause' then
  redis.call('HSET', jk, 'paused', 1)
elseif action == 'resume' then
  redis.call('HDEL', jk, 'paused')
  if redis.call('LLEN', rk) > 0 then redis.call('RPUSH', TURNS, job) end
else
  local n = 0
  for _, batch in ipairs(redis.call('LRANGE', rk, 0, -1)) do
    local bk = P .. ':b:' .. batch
    n = n + tonumber(redis.call('HGET', bk, 'n') or '0')
    redis.call('DEL', bk)
  end
  redis.call('DEL', rk)
  if n > 0 then redis.call('HINCRBY', COUNTS, 'ready', -n) end
  local sched, gone = P .. ':scheduled', {}
  local prefix = '["' .. job .. '",'
  for _, m in ipairs(redis.call('ZRANGE', sched, 0, -1)) do
    if string.sub(m, 1, #prefix) == prefix then gone[#gone + 1] = m end
  end
  if #gone > 0 then bulk('ZREM', sched, gone) end
  cancelled = cancelled + n + #gone
  local fields = {'halted', 1, 'cancelled', cancelled, 'done', 1}
  if v[2] ~= '1' then
    fields[#fields + 1] = 'seq'
    fields[#fields + 1] = tonumber(v[1]) + 1
  end
  finish(job, v[10], accounted + n + #gone == tonumber(v[3]), fields, ARGV[3], v[11])
  redis.call('HDEL', jk, 'paused')
  redis.call('HSET', jk, unpack(fields))
end
return {'ok', redis.call('HGETALL', jk)}
