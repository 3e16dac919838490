
-- Shared by both scripts: the keys, server time, and the pruning.
local H = KEYS[1] .. ':workers'
local Z = KEYS[1] .. ':workers:seen'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Forget the workers whose last beat is older than the retention (ARGV[1], ms).
local oldest = now - tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', Z, '-inf', '(' .. oldest)
for i = 1, #gone, 1000 do
  local j = math.min(i + 999, #gone)
  redis.call('HDEL', H, unpack(gone, i, j))
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', Z, '-inf', '(' .. oldest) end
