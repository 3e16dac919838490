--- PUSH ARGV: job seq next_seq byte line records done messages payload invalid duplicate retention_s chunks
-- The push of `PUSH_ALL`, as the Lua function `push(o, last)`
-- over `ARGV[o + 1 .. last]`:
--
-- 1 job, 2 seq, 3 next seq, 4 byte, 5 line, 6 records, 7 done (0/1),
-- 8 message count, 9 batch payload, 10 invalid, 11 duplicate,
-- 12 retention (s), 13 outcome chunks, then `chunk, entries` per chunk
-- (see `append_chunks`), then the rejects' json.
-- Returns `{'ok', ready}`, `{'stale', ready}`, `{'conflict', current}` or
-- `{'unknown'}`.
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
