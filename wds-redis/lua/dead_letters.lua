--- ARGV: job limit
-- ARGV: job (`''` for all), limit. Returns up to `limit` dead entries.
local limit = tonumber(ARGV[2])
local out = {}
if limit <= 0 then return out end
local jobs
if ARGV[1] ~= '' then jobs = {ARGV[1]} else jobs = redis.call('SMEMBERS', P .. ':deadjobs') end
for _, job in ipairs(jobs) do
  if #out >= limit then break end
  local got = redis.call('LRANGE', P .. ':dead:' .. job, 0, limit - #out - 1)
  for _, e in ipairs(got) do out[#out + 1] = e end
end
return out
