--- ARGV: max_batches ttl_ms rebatch_size max_due
-- ARGV: 1 max batches, 2 ttl (ms), 3 rebatch size, 4 most due retries to
-- move per call. Returns as `lease()` (see `lib/lease.lua`).
return lease(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
