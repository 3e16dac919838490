--- ARGV:
-- No ARGV. Returns `{ready, leased, scheduled, dead}`.
local c = redis.call('HMGET', COUNTS, 'ready', 'leased', 'dead')
return {tonumber(c[1] or '0'), tonumber(c[2] or '0'), redis.call('ZCARD', P .. ':scheduled'),
  tonumber(c[3] or '0')}
