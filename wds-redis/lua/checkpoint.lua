--- ARGV: job
-- ARGV: job. Returns `{seq, byte, line, records, done}` (nils when unknown).
return redis.call('HMGET', P .. ':job:' .. ARGV[1], 'seq', 'byte', 'line', 'records', 'done')
