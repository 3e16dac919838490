--- ARGV: ...push
-- ARGV: per push, its argument count then its arguments (see `lib/push.lua`).
-- Applies them in order up to the first that is refused; returns the
-- replies of those tried, as `push()`'s.
local replies, o = {}, 0
while o < #ARGV do
  local last = o + 1 + tonumber(ARGV[o + 1])
  local reply = push(o + 1, last)
  replies[#replies + 1] = reply
  if reply[1] ~= 'ok' and reply[1] ~= 'stale' then break end
  o = last
end
return replies
