
-- The lease of `LEASE` and `SETTLE_AND_CONTINUE`, as the Lua function
-- `lease(max batches, ttl (ms), rebatch size, most due retries to move)`.
-- Returns `{deadline, {{lease, batch, payload, sending}…}}`.
local function lease(max, ttl, rebatch_size, max_due)
  sweep(256)
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
