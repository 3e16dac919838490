//! The Lua scripts: one per trait call, so each call is one round trip
//! (`EVALSHA`, with `redis::Script` loading the script on `NOSCRIPT`) and
//! each call's writes are atomic.
//!
//! # Layout
//!
//! `KEYS[1]` is the hash tag `{prefix}`; every key is `{prefix}:…`, so all
//! of a deployment's keys live in one slot and the scripts are valid on
//! Redis Cluster.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `:claims` | hash | input identity → job id |
//! | `:jobs` | zset | job id by claim order (`:jobno` counter) |
//! | `:job:<job>` | hash | `meta` json, checkpoint (`seq byte line records done`), counts (`cancelled` included), `finished_ms`, `failed` (the reason, once reading failed), `paused`, `halted` (1 once cancelled) |
//! | `:out:<job>:<chunk>` | list | lines `128·chunk …`, each element `<line>=<outcome>\n…` (the last entry of a line wins; empty means pending again); expires `retention` after the job is done |
//! | `:rejects:<job>` | list | `Reject` json in line order, the job's first `detail` (1,000 by default) only; expires with `:out:` |
//! | `:ready:<job>` | list | the job's ready batch ids, in lease order (each batch holds one job's messages) |
//! | `:turns` | list | the jobs whose ready batches may be leased (some ready, neither paused nor cancelled), in turn: the lease takes one batch of the first and moves it to the back |
//! | `:ready` | list | batch ids written before per-job lists (leased first) |
//! | `:b:<batch>` | hash | `p` payload, `n` messages, `l` lease id, `d` deadline, `s` sending (sticky) |
//! | `:leases` | zset | batch id by lease deadline |
//! | `:scheduled` | zset | message (wire form) by due time |
//! | `:dead:<job>` | list | dead entries; `:deadjobs` (set) lists the jobs that have some |
//! | `:counts` | hash | `ready`, `leased`, `dead` message counts |
//! | `:next` | string | counter for lease and batch ids |
//! | `:workers` | hash | worker id → its last beat (JSON); scripts in `workers.rs` |
//! | `:workers:seen` | zset | worker id by the server time of its last beat |
//!
//! A message's wire form is the JSON array
//! `[job, line, userId, alertMessage, attempts, first_attempt_ms]`, and a
//! batch payload is a JSON array of those, so the scripts can cut and join
//! batches with `table.concat` without decoding anything.

use std::sync::LazyLock;

use deadpool_redis::redis::{cmd, Cmd, Script, ToRedisArgs};

/// Shared by every script: the key prefix, server time and helpers.
macro_rules! prelude {
    () => {
        r#"
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
-- `fields` are the job hash fields about to be written; `lines` is the
-- job's checkpoint line (no outcome lies beyond its chunk).
local function finish(job, was_finished, is_done, fields, retention, lines)
  local rejects = P .. ':rejects:' .. job
  local last = math.floor((tonumber(lines) or 0) / CHUNK_LINES)
  if is_done then
    if not was_finished then
      fields[#fields + 1] = 'finished_ms'
      fields[#fields + 1] = now_ms()
      for chunk = 0, last do redis.call('EXPIRE', out_key(job, chunk), retention) end
      redis.call('EXPIRE', rejects, retention)
    end
  elseif was_finished then
    redis.call('HDEL', P .. ':job:' .. job, 'finished_ms')
    for chunk = 0, last do redis.call('PERSIST', out_key(job, chunk)) end
    redis.call('PERSIST', rejects)
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
"#
    };
}

/// ARGV: identity, job id, meta json, detail limit (rejected and dead lines
/// kept in detail, fixed for the job's life). Returns `{fresh, job, meta}`.
const CLAIM: &str = concat!(
    prelude!(),
    r#"
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
redis.call('ZADD', P .. ':jobs', redis.call('INCR', P .. ':jobno'), job)
return {1, job, ARGV[3]}
"#
);

/// The push of `PUSH_ALL`, as the Lua function `push(o, last)`
/// over `ARGV[o + 1 .. last]`:
///
/// 1 job, 2 seq, 3 next seq, 4 byte, 5 line, 6 records, 7 done (0/1),
/// 8 message count, 9 batch payload, 10 invalid, 11 duplicate,
/// 12 retention (s), 13 outcome chunks, then `chunk, entries` per chunk
/// (see `append_chunks`), then the rejects' json.
/// Returns `{'ok', ready}`, `{'stale', ready}`, `{'conflict', current}` or
/// `{'unknown'}`.
macro_rules! push_fn {
    () => {
        r#"
local function push(o, last)
  local job = ARGV[o + 1]
  local jk = P .. ':job:' .. job
  local v = redis.call('HMGET', jk, 'seq', 'enqueued', 'delivered', 'dead', 'invalid',
    'duplicate', 'finished_ms', 'detail')
  if not v[1] then return {'unknown'} end
  local current, seq = tonumber(v[1]), tonumber(ARGV[o + 2])
  if seq < current then
    return {'stale', tonumber(redis.call('HGET', COUNTS, 'ready') or '0')}
  end
  if seq > current then return {'conflict', current} end
  local n = tonumber(ARGV[o + 8])
  local invalid = tonumber(v[5]) + tonumber(ARGV[o + 10])
  local duplicate = tonumber(v[6]) + tonumber(ARGV[o + 11])
  local chunks = tonumber(ARGV[o + 13])
  if chunks > 0 then
    append_chunks(job, args(o + 14, o + 13 + 2 * chunks))
    -- Only the job's first DETAIL_LIMIT rejects are kept in detail; the
    -- counts (and each line's compact outcome) cover the rest.
    local first = o + 14 + 2 * chunks
    local room = detail_limit(v[8]) - tonumber(v[5]) - tonumber(v[6])
    if room > 0 then bulk('RPUSH', P .. ':rejects:' .. job, ARGV, first, math.min(last, first + room - 1)) end
  end
  local ready
  if n > 0 then
    local batch = job .. '/' .. ARGV[o + 2]
    redis.call('HSET', P .. ':b:' .. batch, 'p', ARGV[o + 9], 'n', n)
    ready_push(job, batch, false)
    ready = redis.call('HINCRBY', COUNTS, 'ready', n)
  else
    ready = tonumber(redis.call('HGET', COUNTS, 'ready') or '0')
  end
  local fields = {'seq', ARGV[o + 3], 'byte', ARGV[o + 4], 'line', ARGV[o + 5], 'records', ARGV[o + 6],
    'done', ARGV[o + 7], 'enqueued', tonumber(v[2]) + n, 'invalid', invalid,
    'duplicate', duplicate}
  local accounted = tonumber(v[3]) + tonumber(v[4]) + invalid + duplicate
  finish(job, v[7], ARGV[o + 7] == '1' and accounted == tonumber(ARGV[o + 6]), fields, ARGV[o + 12],
    ARGV[o + 5])
  redis.call('HSET', jk, unpack(fields))
  return {'ok', ready}
end
"#
    };
}

/// ARGV: per push, its argument count then its arguments (see `push_fn!`).
/// Applies them in order up to the first that is refused; returns the
/// replies of those tried, as `push()`'s.
const PUSH_ALL: &str = concat!(
    prelude!(),
    push_fn!(),
    r#"
local replies, o = {}, 0
while o < #ARGV do
  local last = o + 1 + tonumber(ARGV[o + 1])
  local reply = push(o + 1, last)
  replies[#replies + 1] = reply
  if reply[1] ~= 'ok' and reply[1] ~= 'stale' then break end
  o = last
end
return replies
"#
);

/// The lease of `LEASE` and `SETTLE_AND_CONTINUE`, as the Lua function
/// `lease(max batches, ttl (ms), rebatch size, most due retries to move)`.
/// Returns `{deadline, {{lease, batch, payload, sending}…}}`.
macro_rules! lease_fn {
    () => {
        r#"
local function lease(max, ttl, rebatch_size, max_due)
  local now = now_ms()
  local deadline = now + ttl
  local LEASES, READY, SCHED = P .. ':leases', P .. ':ready', P .. ':scheduled'
  -- 1. Expired leases first: their holders are presumed dead.
  local batches = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now, 'LIMIT', 0, max)
  local reclaimed = #batches
  -- 2. Due retries become ready.
  local due = redis.call('ZRANGEBYSCORE', SCHED, '-inf', now, 'LIMIT', 0, max_due)
  if #due > 0 then
    bulk('ZREM', SCHED, due)
    rebatch(due, 'retry', rebatch_size)
  end
  -- 3. Ready batches: any left from before per-job lists, then one job's
  -- at a time in turn, each job's in push order.
  if #batches < max then
    local popped = redis.call('LPOP', READY, max - #batches)
    if popped then
      for _, b in ipairs(popped) do batches[#batches + 1] = b end
    end
  end
  while #batches < max do
    local job = redis.call('LPOP', TURNS)
    if not job then break end
    local rk = P .. ':ready:' .. job
    local b = redis.call('LPOP', rk)
    if b then batches[#batches + 1] = b end
    if redis.call('LLEN', rk) > 0 then redis.call('RPUSH', TURNS, job) end
  end
  if #batches == 0 then return {deadline, {}} end
  local base = redis.call('INCRBY', P .. ':next', #batches) - #batches
  local out, index, moved = {}, {}, 0
  for i, batch in ipairs(batches) do
    local bk = P .. ':b:' .. batch
    local h = redis.call('HMGET', bk, 'p', 'n', 's')
    if h[1] then
      local id = batch .. '#' .. (base + i)
      redis.call('HSET', bk, 'l', id, 'd', deadline)
      index[#index + 1] = deadline
      index[#index + 1] = batch
      out[#out + 1] = {id, batch, h[1], h[3] and 1 or 0}
      if i > reclaimed then moved = moved + tonumber(h[2]) end
    elseif i <= reclaimed then
      redis.call('ZREM', LEASES, batch)
    end
  end
  if #index > 0 then bulk('ZADD', LEASES, index) end
  if moved > 0 then
    redis.call('HINCRBY', COUNTS, 'ready', -moved)
    redis.call('HINCRBY', COUNTS, 'leased', moved)
  end
  return {deadline, out}
end
"#
    };
}

/// ARGV: 1 max batches, 2 ttl (ms), 3 rebatch size, 4 most due retries to
/// move per call. Returns as `lease()` (see `lease_fn!`).
const LEASE: &str = concat!(
    prelude!(),
    lease_fn!(),
    r#"
return lease(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
"#
);

/// ARGV: lease, batch. Returns 1, or 0 when the lease is not held.
const MARK_SENDING: &str = concat!(
    prelude!(),
    r#"
return mark(ARGV[1], ARGV[2])
"#
);

/// ARGV: lease, batch, ttl (ms). Returns the new deadline, or -1 when the
/// lease is not held.
const EXTEND: &str = concat!(
    prelude!(),
    r#"
if not held(ARGV[1], ARGV[2], {}) then return -1 end
local deadline = now_ms() + tonumber(ARGV[3])
redis.call('HSET', P .. ':b:' .. ARGV[2], 'd', deadline)
redis.call('ZADD', P .. ':leases', deadline, ARGV[2])
return deadline
"#
);

/// ARGV: lease, batch, retention (s). Returns 1, or 0 when the lease is
/// not held. The sending mark stays (it is sticky). A cancelled job's batch
/// is dropped and its messages counted as cancelled.
const RELEASE: &str = concat!(
    prelude!(),
    r#"
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
"#
);

/// The settle of `SETTLE_AND_CONTINUE`, as the Lua function
/// `settle()`.
///
/// ARGV: 1 lease, 2 batch, 3 retention (s), 4 outcome count, 5 job
/// groups, 6 retries, then per job group: job, delivered, dead, of which in
/// doubt, of which exhausted (the rest are permanent), outcome chunks, then
/// `chunk, entries` per chunk (see `append_chunks`), then `full, short` per dead entry (the short one
/// without the reason's detail, stored once the job has its `detail` limit
/// of dead letters); then `due time, message` per retry. Returns `{'ok'}`, `{'lost'}`, `{'count', n}` or `{'unknown', job}`.
///
/// The client groups the outcomes by job so that each group's writes are
/// ARGV slices handed straight to `HSET` and `RPUSH`: no per-message work
/// in Lua.
macro_rules! settle_fn {
    () => {
        r#"
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
"#
    };
}

/// Settles one lease, marks the batch taking over its sending slot and
/// leases more, in one step: how a worker ends one batch and goes on.
///
/// ARGV: as `settle()` (see `settle_fn!`), then six more: the lease and
/// batch to mark (`''` for none), then as `LEASE`'s (max batches, which may
/// be 0, ttl, rebatch size, most due retries).
/// Returns `{settle reply, marked (1; 0 when not held; -1 when none asked),
/// lease reply}`.
const SETTLE_AND_CONTINUE: &str = concat!(
    prelude!(),
    settle_fn!(),
    lease_fn!(),
    r#"
local n = #ARGV
local settled = settle()
local marked = -1
if ARGV[n - 5] ~= '' then marked = mark(ARGV[n - 5], ARGV[n - 4]) end
local leased = {0, {}}
local max = tonumber(ARGV[n - 3])
if max > 0 then
  leased = lease(max, tonumber(ARGV[n - 2]), tonumber(ARGV[n - 1]), tonumber(ARGV[n]))
end
return {settled, marked, leased}
"#
);

/// ARGV: job (`''` for all), rebatch size, kind (`''` for every kind).
/// Returns how many were replayed. A cancelled job's dead letters stay.
///
/// A dead entry is `<line>:<kind>:<length>:<message><dead letter json>`,
/// where `<kind>` is 0 (permanent), 1 (in doubt) or 2 (exhausted),
/// where `<message>` is the wire form to replay (attempts already reset)
/// and `<length>` its byte length; the dead letter json holds the reason's
/// `"kind":"…"` (a raw `"kind":"` can appear nowhere else in it: quotes
/// inside strings are escaped).
const REPLAY: &str = concat!(
    prelude!(),
    r#"
local jobs
if ARGV[1] ~= '' then jobs = {ARGV[1]} else jobs = redis.call('SMEMBERS', P .. ':deadjobs') end
local kind = ARGV[3]
local elems, total = {}, 0
for _, job in ipairs(jobs) do
  local dk = P .. ':dead:' .. job
  local all = {}
  if redis.call('HGET', P .. ':job:' .. job, 'halted') ~= '1' then
    all = redis.call('LRANGE', dk, 0, -1)
  end
  local entries, kept = {}, {}
  for _, e in ipairs(all) do
    if kind == '' or kind_of(e) == kind then
      entries[#entries + 1] = e
    else
      kept[#kept + 1] = e
    end
  end
  if #entries > 0 then
    redis.call('DEL', dk)
    if #kept > 0 then bulk('RPUSH', dk, kept) else redis.call('SREM', P .. ':deadjobs', job) end
    -- Each replayed line gets an empty entry: pending again.
    -- Replayed entries by kind, as the entry's kind digit.
    local chunks, order, by_kind = {}, {}, {['0'] = 0, ['1'] = 0, ['2'] = 0}
    for _, e in ipairs(entries) do
      local line, d, len, at = string.match(e, '^(%d+):(%d):(%d+):()')
      local chunk = tostring(math.floor(tonumber(line) / CHUNK_LINES))
      if not chunks[chunk] then
        chunks[chunk] = {}
        order[#order + 1] = chunk
      end
      local c = chunks[chunk]
      c[#c + 1] = line .. '=\n'
      by_kind[d] = (by_kind[d] or 0) + 1
      elems[#elems + 1] = string.sub(e, at, at + tonumber(len) - 1)
    end
    local jk = P .. ':job:' .. job
    local v = redis.call('HMGET', jk, 'dead', 'in_doubt', 'finished_ms', 'line', 'permanent',
      'exhausted')
    if v[1] then
      local pairs = {}
      for _, chunk in ipairs(order) do
        pairs[#pairs + 1] = chunk
        pairs[#pairs + 1] = table.concat(chunks[chunk])
      end
      append_chunks(job, pairs)
      -- Never below zero: a dead letter stored before exhausted ones had
      -- a kind digit of their own counts as permanent.
      local function less(count, n) return math.max(0, tonumber(count or 0) - n) end
      local fields = {'dead', tonumber(v[1]) - #entries, 'in_doubt', less(v[2], by_kind['1']),
        'permanent', less(v[5], by_kind['0']), 'exhausted', less(v[6], by_kind['2'])}
      finish(job, v[3], false, fields, 0, v[4])
      redis.call('HSET', jk, unpack(fields))
    end
    total = total + #entries
  end
end
if total > 0 then
  rebatch(elems, 'replay', tonumber(ARGV[2]))
  redis.call('HINCRBY', COUNTS, 'dead', -total)
end
return total
"#
);

/// ARGV: job (`''` for all), limit. Returns up to `limit` dead entries.
const DEAD_LETTERS: &str = concat!(
    prelude!(),
    r#"
local limit = tonumber(ARGV[2])
local out = {}
if limit <= 0 then return out end
local jobs
if ARGV[1] ~= '' then jobs = {ARGV[1]} else jobs = redis.call('SMEMBERS', P .. ':deadjobs') end
for _, job in ipairs(jobs) do
  if #out >= limit then break end
  local got = redis.call('LRANGE', P .. ':dead:' .. job, 0, limit - #out - 1)
  for _, e in ipairs(got) do out[#out + 1] = e end
end
return out
"#
);

/// No ARGV. Returns `{ready, leased, scheduled, dead}`.
const STATS: &str = concat!(
    prelude!(),
    r#"
local c = redis.call('HMGET', COUNTS, 'ready', 'leased', 'dead')
return {tonumber(c[1] or '0'), tonumber(c[2] or '0'), redis.call('ZCARD', P .. ':scheduled'),
  tonumber(c[3] or '0')}
"#
);

/// No ARGV. Returns `{{job, {field, value…}}…}`, newest job first.
const REPORTS: &str = concat!(
    prelude!(),
    r#"
local out = {}
for _, job in ipairs(redis.call('ZREVRANGE', P .. ':jobs', 0, -1)) do
  out[#out + 1] = {job, redis.call('HGETALL', P .. ':job:' .. job)}
end
return out
"#
);

/// ARGV: job. Returns the job hash as `{field, value…}` (empty when unknown).
const REPORT: &str = concat!(
    prelude!(),
    r#"
return redis.call('HGETALL', P .. ':job:' .. ARGV[1])
"#
);

/// ARGV: action (`pause`, `resume`, `cancel`), job, retention (s).
/// Returns `{'ok', {field, value…}}` (the job hash after it), `{'unknown'}`
/// or `{'illegal', 'cancelled' | 'finished'}` (see `wds_core::backend::Action::check`).
///
/// Pause takes the job out of `:turns`, resume puts it back when it has
/// ready batches. Cancel drops its ready batches and scheduled retries,
/// counts their messages as cancelled, and ends its reading as `FAIL` does.
const CONTROL: &str = concat!(
    prelude!(),
    r#"
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
"#
);

/// ARGV: job, reason, retention (s). Ends a job's reading as failed unless
/// it is fully read already: `done`, `seq + 1` and the `failed` reason, with
/// the finish stamp if every line is accounted. Returns the job hash as
/// `REPORT` does (empty when unknown).
const FAIL: &str = concat!(
    prelude!(),
    r#"
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
"#
);

/// ARGV: job. Returns `{seq, byte, line, records, done}` (nils when unknown).
const CHECKPOINT: &str = concat!(
    prelude!(),
    r#"
return redis.call('HMGET', P .. ':job:' .. ARGV[1], 'seq', 'byte', 'line', 'records', 'done')
"#
);

/// ARGV: job, chunk. Returns `{0}` for an unknown job, else `{1, {the
/// chunk's elements…}}` (none when the chunk has no entries yet).
const OUTCOME: &str = concat!(
    prelude!(),
    r#"
if redis.call('EXISTS', P .. ':job:' .. ARGV[1]) == 0 then return {0} end
return {1, redis.call('LRANGE', out_key(ARGV[1], ARGV[2]), 0, -1)}
"#
);

/// ARGV: job, limit. Returns `{0}` for an unknown job, else `{1, {reject…}}`.
const REJECTS: &str = concat!(
    prelude!(),
    r#"
if redis.call('EXISTS', P .. ':job:' .. ARGV[1]) == 0 then return {0} end
local limit = tonumber(ARGV[2])
if limit <= 0 then return {1, {}} end
return {1, redis.call('LRANGE', P .. ':rejects:' .. ARGV[1], 0, limit - 1)}
"#
);

/// GCRA reservation of up to `k` permits for one endpoint, shared by every
/// worker. Times are server microseconds.
///
/// KEYS[1]: the endpoint's hash (`tat`, `pause`). ARGV: 1 emission interval
/// T (µs), 2 tolerance tau = (burst − 1)·T (µs), 3 k, 4 look-ahead (µs).
///
/// Permit `i` of a reservation may be used from
/// `max(now, base + i·T − tau)`; the script grants the permits whose time
/// is within the look-ahead and returns `{granted, now, base, pause}`. When
/// a back-off is in force it grants nothing and `pause` says until when.
const GCRA_RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T, tau, k, ahead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'tat', 'pause')
local tat, pause = tonumber(v[1] or '0'), tonumber(v[2] or '0')
if pause > now then
  return {0, string.format('%.0f', now), string.format('%.0f', tat), string.format('%.0f', pause)}
end
local base = math.max(tat, now)
-- Permit i fits when base + i*T - tau <= now + ahead.
local fit = math.floor((now + ahead + tau - base) / T) + 1
local granted = math.max(0, math.min(k, fit))
if granted > 0 then
  local new_tat = base + granted * T
  redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', new_tat))
  -- Forget the endpoint once it has been idle for a minute.
  redis.call('PEXPIRE', KEYS[1], math.ceil((new_tat - now) / 1000) + 60000)
end
return {granted, string.format('%.0f', now), string.format('%.0f', base), '0'}
"#;

/// Stores a back-off for every worker of an endpoint.
///
/// KEYS[1]: the endpoint's hash. ARGV: 1 pause length from now (µs).
/// A shorter back-off never shortens a longer one; reservations resume
/// after it. Returns the pause end in server microseconds.
const GCRA_BACK_OFF: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'tat', 'pause')
local pause = math.max(tonumber(v[2] or '0'), untl)
local tat = math.max(tonumber(v[1] or '0'), pause)
redis.call('HSET', KEYS[1], 'pause', string.format('%.0f', pause), 'tat', string.format('%.0f', tat))
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) / 1000) + 60000)
return string.format('%.0f', pause)
"#;

/// An endpoint's shared back-off, without taking a permit: `[now, pause]`
/// in server microseconds (`pause` 0 when none was ever set).
const GCRA_PAUSE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
return {string.format('%.0f', now), string.format('%.0f', pause)}
"#;

/// Changes an endpoint's circuit if it is in the state expected.
///
/// KEYS[1]: the endpoint's circuit key. ARGV: 1 the state expected, 2 the
/// new state (as text; `closed` is stored as no key). Returns 1 when the
/// state was as expected and is now the new one, else 0.
const CIRCUIT_SWAP: &str = r#"
local current = redis.call('GET', KEYS[1]) or 'closed'
if current ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'closed' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"#;

/// A script of ours: its code and its SHA-1, which `EVALSHA` names it by.
#[derive(Debug)]
pub(crate) struct Lua {
    pub(crate) code: &'static str,
    hash: String,
}

impl Lua {
    pub(crate) fn new(code: &'static str) -> Self {
        Lua {
            code,
            hash: Script::new(code).get_hash().to_owned(),
        }
    }

    /// An `EVALSHA` of this script with `keys`, to which arguments are
    /// added. Built in one buffer: redis-rs's `ScriptInvocation` keeps each
    /// argument in a vector of its own and copies them all again to send
    /// them, which for a batch payload shows.
    pub(crate) fn invocation<K: ToRedisArgs>(&'static self, keys: &[K]) -> Invocation {
        let mut call = cmd("EVALSHA");
        call.arg(&self.hash).arg(keys.len());
        for key in keys {
            call.arg(key);
        }
        Invocation { lua: self, call }
    }
}

/// A script call being built; see [`Lua::invocation`].
#[derive(Debug)]
pub(crate) struct Invocation {
    pub(crate) lua: &'static Lua,
    pub(crate) call: Cmd,
}

impl Invocation {
    /// Adds an argument (`ARGV[n]`).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.call.arg(arg);
        self
    }
}

/// Every script, compiled (hashed) once per process.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) claim: Lua,
    pub(crate) push_all: Lua,
    pub(crate) lease: Lua,
    pub(crate) mark_sending: Lua,
    pub(crate) extend: Lua,
    pub(crate) release: Lua,
    pub(crate) settle_and_continue: Lua,
    pub(crate) replay: Lua,
    pub(crate) dead_letters: Lua,
    pub(crate) stats: Lua,
    pub(crate) report: Lua,
    pub(crate) checkpoint: Lua,
    pub(crate) fail: Lua,
    pub(crate) control: Lua,
    pub(crate) reports: Lua,
    pub(crate) outcome: Lua,
    pub(crate) rejects: Lua,
    pub(crate) gcra_reserve: Lua,
    pub(crate) gcra_back_off: Lua,
    pub(crate) gcra_pause: Lua,
    pub(crate) circuit_swap: Lua,
}

/// The scripts, shared by every backend of the process.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: Lua::new(CLAIM),
    push_all: Lua::new(PUSH_ALL),
    lease: Lua::new(LEASE),
    mark_sending: Lua::new(MARK_SENDING),
    extend: Lua::new(EXTEND),
    release: Lua::new(RELEASE),
    settle_and_continue: Lua::new(SETTLE_AND_CONTINUE),
    replay: Lua::new(REPLAY),
    dead_letters: Lua::new(DEAD_LETTERS),
    stats: Lua::new(STATS),
    report: Lua::new(REPORT),
    checkpoint: Lua::new(CHECKPOINT),
    fail: Lua::new(FAIL),
    control: Lua::new(CONTROL),
    reports: Lua::new(REPORTS),
    outcome: Lua::new(OUTCOME),
    rejects: Lua::new(REJECTS),
    gcra_reserve: Lua::new(GCRA_RESERVE),
    gcra_back_off: Lua::new(GCRA_BACK_OFF),
    gcra_pause: Lua::new(GCRA_PAUSE),
    circuit_swap: Lua::new(CIRCUIT_SWAP),
});
