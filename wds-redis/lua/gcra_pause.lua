--- ARGV:
-- An endpoint's shared back-off, without taking a permit: `[now, pause]`
-- in server microseconds (`pause` 0 when none was ever set).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause') or '0')
return {string.format('%.0f', now), string.format('%.0f', pause)}
