--- ARGV: interval_us tolerance_us permits ahead_us
-- GCRA reservation of up to `k` permits for one endpoint, shared by every
-- worker. Times are server microseconds.
--
-- KEYS[1]: the endpoint's hash (`tat`, `pause`). ARGV: 1 emission interval
-- T (µs), 2 tolerance tau = (burst − 1)·T (µs), 3 k, 4 look-ahead (µs).
--
-- Permit `i` of a reservation may be used from
-- `max(now, base + i·T − tau)`; the script grants the permits whose time
-- is within the look-ahead and returns `{granted, now, base, pause}`. When
-- a back-off is in force it grants nothing and `pause` says until when.
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
