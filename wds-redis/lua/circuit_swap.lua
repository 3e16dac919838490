--- ARGV: expected new
-- Changes an endpoint's circuit if it is in the state expected.
--
-- KEYS[1]: the endpoint's circuit key. ARGV: 1 the state expected, 2 the
-- new state (as text; `closed` is stored as no key). Returns 1 when the
-- state was as expected and is now the new one, else 0.
local current = redis.call('GET', KEYS[1]) or 'closed'
if current ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'closed' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
