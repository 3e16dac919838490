--- ARGV:
-- No ARGV. Returns `{{job, {field, value…}, claim order}…}`, newest job
-- first.
local out = {}
local jobs = redis.call('ZREVRANGE', P .. ':jobs', 0, -1, 'WITHSCORES')
for i = 1, #jobs, 2 do
  local job = jobs[i]
  out[#out + 1] = {job, redis.call('HGETALL', P .. ':job:' .. job), jobs[i + 1]}
end
return out
