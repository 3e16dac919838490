
-- The settle of `SETTLE_AND_CONTINUE`, as the Lua function
-- `settle()`.
--
-- ARGV: 1 lease, 2 batch, 3 retention (s), 4 outcome count, 5 job
-- groups, 6 retries, then per job group: job, delivered, dead, of which in
-- doubt, of which exhausted (the rest are permanent), outcome chunks, then
-- `chunk, entries` per chunk (see `append_chunks`), then `full, short` per dead entry (the short one
-- without the reason's detail, stored once the job has its `detail` limit
-- of dead letters); then `due time, message` per retry. Returns `{'ok'}`, `{'lost'}`, `{'count', n}` or `{'unknown', job}`.
--
-- The client groups the outcomes by job so that each group's writes are
-- ARGV slices handed straight to `HSET` and `RPUSH`: no per-message work
-- in Lua.
local function settle()
  local h = held(ARGV[1], ARGV[2], {'n'})
  if not h then return {'lost'} end
  local n = tonumber(h[3])
  if tonumber(ARGV[4]) ~= n then return {'count', n} end
  local groups, retries = tonumber(ARGV[5]), tonumber(ARGV[6])
  -- Check every job before writing anything: a script cannot roll back.
  local jobs, at = {}, 7
  for g = 1, groups do
    local job = ARGV[at]
    local v = redis.call('HMGET', P .. ':job:' .. job, 'records', 'done', 'delivered', 'dead',
      'in_doubt', 'invalid', 'duplicate', 'finished_ms', 'line', 'detail', 'permanent',
      'exhausted', 'cancelled')
    if not v[1] then return {'unknown', job} end
    local delivered, dead = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
    local chunks = tonumber(ARGV[at + 5])
    jobs[g] = {job = job, v = v, at = at, delivered = delivered, dead = dead,
      in_doubt = tonumber(ARGV[at + 3]), exhausted = tonumber(ARGV[at + 4]), chunks = chunks}
    at = at + 6 + 2 * chunks + 2 * dead
  end
  redis.call('DEL', P .. ':b:' .. ARGV[2])
  redis.call('ZREM', P .. ':leases', ARGV[2])
  local dead_total = 0
  for _, j in ipairs(jobs) do
    local job, v = j.job, j.v
    local first = j.at + 6
    append_chunks(job, args(first, first + 2 * j.chunks - 1))
    if j.dead > 0 then
      -- The job's first DETAIL_LIMIT dead letters in full, the rest without
      -- the detail of their reason.
      local room = detail_limit(v[10]) - tonumber(v[4])
      local entries = {}
      for i = 0, j.dead - 1 do
        local full = first + 2 * j.chunks + 2 * i
        entries[#entries + 1] = ARGV[i < room and full or full + 1]
      end
      bulk('RPUSH', P .. ':dead:' .. job, entries)
      redis.call('SADD', P .. ':deadjobs', job)
      dead_total = dead_total + j.dead
    end
    local delivered = tonumber(v[3]) + j.delivered
    local dead = tonumber(v[4]) + j.dead
    -- Counts by reason: a job claimed before they were kept has none.
    local permanent = j.dead - j.in_doubt - j.exhausted
    local fields = {'delivered', delivered, 'dead', dead, 'in_doubt', tonumber(v[5]) + j.in_doubt,
      'permanent', tonumber(v[11] or 0) + permanent, 'exhausted', tonumber(v[12] or 0) + j.exhausted}
    local accounted = delivered + dead + tonumber(v[6]) + tonumber(v[7]) + tonumber(v[13] or '0')
    finish(job, v[8], v[2] == '1' and accounted == tonumber(v[1]), fields, ARGV[3], v[9])
    redis.call('HSET', P .. ':job:' .. job, unpack(fields))
  end
  if retries > 0 then
    -- A cancelled job's retries are counted as cancelled, not scheduled.
    local keep, halted = {}, {}
    for i = at, at + 2 * retries - 1, 2 do
      local job = job_of(ARGV[i + 1]) or ''
      if halted[job] == nil then
        halted[job] = redis.call('HGET', P .. ':job:' .. job, 'halted') == '1' and 0 or false
      end
      if halted[job] then
        halted[job] = halted[job] + 1
      else
        keep[#keep + 1] = ARGV[i]
        keep[#keep + 1] = ARGV[i + 1]
      end
    end
    if #keep > 0 then bulk('ZADD', P .. ':scheduled', keep) end
    for job, n in pairs(halted) do
      if n and n > 0 then add_cancelled(job, n, ARGV[3]) end
    end
  end
  redis.call('HINCRBY', COUNTS, 'leased', -n)
  if dead_total > 0 then redis.call('HINCRBY', COUNTS, 'dead', dead_total) end
  return {'ok'}
end
