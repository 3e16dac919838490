--- ARGV: job
-- ARGV: job. Returns the job hash as `{field, value…}` (empty when unknown).
return redis.call('HGETALL', P .. ':job:' .. ARGV[1])
