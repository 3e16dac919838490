--- ARGV: job limit
-- ARGV: job, limit. Returns `{0}` for an unknown job, else `{1, {reject…}}`.
if redis.call('EXISTS', P .. ':job:' .. ARGV[1]) == 0 then return {0} end
local limit = tonumber(ARGV[2])
if limit <= 0 then return {1, {}} end
return {1, redis.call('LRANGE', P .. ':rejects:' .. ARGV[1], 0, limit - 1)}
