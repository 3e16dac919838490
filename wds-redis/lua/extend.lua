--- ARGV: lease batch ttl_ms
-- ARGV: lease, batch, ttl (ms). Returns the new deadline, or -1 when the
-- lease is not held.
if not held(ARGV[1], ARGV[2], {}) then return -1 end
local deadline = now_ms() + tonumber(ARGV[3])
redis.call('HSET', P .. ':b:' .. ARGV[2], 'd', deadline)
redis.call('ZADD', P .. ':leases', deadline, ARGV[2])
return deadline
