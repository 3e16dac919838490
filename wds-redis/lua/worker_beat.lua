--- ARGV: retention_ms worker beat
-- Stores a worker's beat. KEYS[1]: the tag. ARGV: 1 retention (ms),
-- 2 worker id, 3 beat JSON. Returns the server time it was stored at.
redis.call('HSET', H, ARGV[2], ARGV[3])
redis.call('ZADD', Z, now, ARGV[2])
return now
