--- ARGV: job chunk
-- ARGV: job, chunk. Returns `{0}` for an unknown job, else `{1, {the
-- chunk's elements…}}` (none when the chunk has no entries yet).
if redis.call('EXISTS', P .. ':job:' .. ARGV[1]) == 0 then return {0} end
return {1, redis.call('LRANGE', out_key(ARGV[1], ARGV[2]), 0, -1)}
