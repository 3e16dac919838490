--- ARGV:
-- No ARGV. Returns `{{job, {field, value…}}…}`, newest job first.
local out = {}
for _, job in ipairs(redis.call('ZREVRANGE', P .. ':jobs', 0, -1)) do
  out[#out + 1] = {job, redis.call('HGETALL', P .. ':job:' .. job)}
end
return out
