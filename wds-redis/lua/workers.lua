--- ARGV: retention_ms
-- Every worker within the retention. KEYS[1]: the tag. ARGV: 1
-- retention (ms). Returns a flat list of id, seen_ms, beat JSON.
local ids = redis.call('ZRANGE', Z, 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local beat = redis.call('HGET', H, ids[i])
  if beat then
    out[#out + 1] = ids[i]
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = beat
  end
end
return out
