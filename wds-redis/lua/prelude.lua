
-- Shared by every script: the key prefix, server time and helpers.
local P = KEYS[1]
local COUNTS = P .. ':counts'
local TURNS = P .. ':turns'
local CHUNK_LINES = 128

-- The job of a batch payload or a message's wire form (both start with
-- the job id, as `["job",…` or `[["job",…`).
local function job_of(wire)
  return string.match(wire, '^%[%[?"([^"]*)"')
end

-- Queues a batch of `job`'s (at the front of its batches, and the job
-- first in turn, when `front`). A job is in TURNS while it has ready
-- batches and is not paused.
local function ready_push(job, batch, front)
  local rk = P .. ':ready:' .. job
  local len
  if front then len = redis.call('LPUSH', rk, batch) else len = redis.call('RPUSH', rk, batch) end
  if not front and len > 1 then return end
  if redis.call('HGET', P .. ':job:' .. job, 'paused') == '1' then return end
  if front then redis.call('LREM', TURNS, 0, job) end
  if front then redis.call('LPUSH', TURNS, job) else redis.call('RPUSH', TURNS, job) end
end

-- The kind of a dead entry: the last `"reason":{"kind":…` in it, since a
-- message's attributes (an object of anything, before the reason) may
-- hold the same text and its strings cannot (their quotes are escaped).
local function kind_of(entry)
  local kind
  for k in string.gmatch(entry, '"reason":{"kind":"([%l_]+)"') do kind = k end
  return kind
end

-- The key of a job's outcome chunk.
local function out_key(job, chunk)
  return P .. ':out:' .. job .. ':' .. chunk
end

-- Redis server time, so that workers with skewed clocks agree on deadlines;
-- read once per script.
local NOW
local function now_ms()
  if not NOW then
    local t = redis.call('TIME')
    NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW
end

-- A variadic command over `args[from..to]` (all of `args` by default) in
-- slices of 1000 arguments: unpack() is limited by the Lua C stack. Slices
-- are even, so field/value pairs stay together.
-- Rejects, and dead letters, of a job kept in detail: the job's `detail` field
-- (set at its claim), or this for jobs claimed before there was one.
local DETAIL_LIMIT = 1000
local function detail_limit(stored)
  return tonumber(stored) or DETAIL_LIMIT
end

local function bulk(cmd, key, args, from, to)
  local i, n = from or 1, to or #args
  while i <= n do
    local j = i + 999
    if j > n then j = n end
    redis.call(cmd, key, unpack(args, i, j))
    i = j + 1
  end
end

-- Stamps (or clears) a job's finish time after its counts changed. Once
-- done, its per-line data expires after the retention; a replay keeps it.
-- Finishing costs the same whatever the job's size: the rejects are one
-- key (EXPIRE), and the outcome chunks, one key per 128 lines, are deleted
-- by sweep() once the job's time in EXPIRING comes. `fields` are the job
-- hash fields about to be written; `lines` is the job's checkpoint line
-- (no outcome lies beyond its chunk).
local EXPIRING = P .. ':expiring'
local function finish(job, was_finished, is_done, fields, retention, lines)
  local rejects = P .. ':rejects:' .. job
  if is_done then
    if not was_finished then
      fields[#fields + 1] = 'finished_ms'
      fields[#fields + 1] = now_ms()
      redis.call('ZADD', EXPIRING, now_ms() + 1000 * tonumber(retention), job)
      redis.call('EXPIRE', rejects, retention)
    end
  elseif was_finished then
    redis.call('HDEL', P .. ':job:' .. job, 'finished_ms')
    redis.call('ZREM', EXPIRING, job)
    -- Jobs finished by an older version had a TTL on each chunk. A replay
    -- is an operator's action, not the delivery path.
    local last = math.floor((tonumber(lines) or 0) / CHUNK_LINES)
    for chunk = 0, last do redis.call('PERSIST', out_key(job, chunk)) end
    redis.call('PERSIST', rejects)
  end
end

-- Deletes the outcome chunks of the job whose retention ran out first, at
-- most `limit` keys a call (the job's `swept` field says how far it got);
-- run by every lease, so a finished job's data goes within the lease calls
-- after its time, a few hundred keys at a time, never in one long script.
local function sweep(limit)
  local due = redis.call('ZRANGEBYSCORE', EXPIRING, '-inf', now_ms(), 'LIMIT', 0, 1)
  local job = due[1]
  if not job then return end
  local jk = P .. ':job:' .. job
  local v = redis.call('HMGET', jk, 'line', 'swept')
  local last = math.floor((tonumber(v[1]) or 0) / CHUNK_LINES)
  local from = tonumber(v[2]) or 0
  local to = math.min(from + limit - 1, last)
  local keys = {}
  for chunk = from, to do keys[#keys + 1] = out_key(job, chunk) end
  if #keys > 0 then redis.call('UNLINK', unpack(keys)) end
  if to >= last then
    redis.call('ZREM', EXPIRING, job)
    redis.call('HDEL', jk, 'swept')
  else
    redis.call('HSET', jk, 'swept', to + 1)
  end
end

-- ARGV[from..to] as a table (unpack() would hit the C stack limit).
local function args(from, to)
  local t = {}
  for i = from, to do t[#t + 1] = ARGV[i] end
  return t
end

-- Appends `line=outcome\n` entries to a job's outcome chunks: `pairs` is a
-- flat list of chunk, entries. One key per 128 lines, rather than a key or
-- field per line, costs Redis a tenth of the work and of the memory. Each
-- call's entries are one more element of the chunk's list: RPUSH, rather
-- than a read and a write, keeps the chunk out of Lua (every string entering
-- Lua is hashed whole), and unlike APPEND it stores each element at its size
-- (an appended string keeps up to as much room again for growth, and a
-- finished job's outcomes are kept for the whole retention).
local function append_chunks(job, pairs)
  for i = 1, #pairs, 2 do
    redis.call('RPUSH', out_key(job, pairs[i]), pairs[i + 1])
  end
end

-- Appends messages (wire form) to their jobs' ready lists as new batches
-- of one job each.
local function rebatch(elems, kind, size)
  local groups, order = {}, {}
  for _, e in ipairs(elems) do
    local job = job_of(e) or ''
    if not groups[job] then
      groups[job] = {}
      order[#order + 1] = job
    end
    local g = groups[job]
    g[#g + 1] = e
  end
  for _, job in ipairs(order) do
    local g = groups[job]
    for i = 1, #g, size do
      local j = i + size - 1
      if j > #g then j = #g end
      local batch = kind .. '/' .. redis.call('INCR', P .. ':next')
      redis.call('HSET', P .. ':b:' .. batch,
        'p', '[' .. table.concat(g, ',', i, j) .. ']', 'n', j - i + 1)
      ready_push(job, batch, false)
    end
  end
  redis.call('HINCRBY', COUNTS, 'ready', #elems)
end

-- Counts `n` more lines of a cancelled job as cancelled (and stamps its
-- finish when that accounts for every line).
local function add_cancelled(job, n, retention)
  local jk = P .. ':job:' .. job
  local v = redis.call('HMGET', jk, 'records', 'delivered', 'dead', 'invalid', 'duplicate',
    'cancelled', 'finished_ms', 'line')
  if not v[1] then return end
  local cancelled = tonumber(v[6] or '0') + n
  local fields = {'cancelled', cancelled}
  local accounted = tonumber(v[2]) + tonumber(v[3]) + tonumber(v[4]) + tonumber(v[5]) + cancelled
  finish(job, v[7], accounted == tonumber(v[1]), fields, retention, v[8])
  redis.call('HSET', jk, unpack(fields))
end

-- The batch hash of a lease that is still held, or nil.
local function held(lease, batch, fields)
  local h = redis.call('HMGET', P .. ':b:' .. batch, 'l', 'd', unpack(fields))
  if h[1] ~= lease or tonumber(h[2]) <= now_ms() then return nil end
  return h
end

-- Marks a held lease's batch as sending (sticky): 1, or 0 when not held.
local function mark(lease, batch)
  if not held(lease, batch, {}) then return 0 end
  redis.call('HSET', P .. ':b:' .. batch, 's', 1)
  return 1
end
