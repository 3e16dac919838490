--- ARGV: job rebatch_size kind
-- ARGV: job (`''` for all), rebatch size, kind (`''` for every kind).
-- Returns how many were replayed. A cancelled job's dead letters stay.
--
-- A dead entry is `<line>:<kind>:<length>:<message><dead letter json>`,
-- where `<kind>` is 0 (permanent), 1 (in doubt) or 2 (exhausted),
-- where `<message>` is the wire form to replay (attempts already reset)
-- and `<length>` its byte length; the dead letter json holds the reason's
-- `"kind":"…"` (a raw `"kind":"` can appear nowhere else in it: quotes
-- inside strings are escaped).
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
