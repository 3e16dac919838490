--- ARGV: pause_us
-- Stores a back-off for every worker of an endpoint.
--
-- KEYS[1]: the endpoint's hash. ARGV: 1 pause length from now (µs).
-- A shorter back-off never shortens a longer one; reservations resume
-- after it. Returns the pause end in server microseconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'tat', 'pause')
local pause = math.max(tonumber(v[2] or '0'), untl)
local tat = math.max(tonumber(v[1] or '0'), pause)
redis.call('HSET', KEYS[1], 'pause', string.format('%.0f', pause), 'tat', string.format('%.0f', tat))
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now) / 1000) + 60000)
return string.format('%.0f', pause)
