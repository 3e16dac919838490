--- ARGV: lease batch retention_s outcomes groups retries ...group ...retry mark_lease mark_batch max_batches ttl_ms rebatch_size max_due
-- Settles one lease, marks the batch taking over its sending slot and
-- leases more, in one step: how a worker ends one batch and goes on.
--
-- ARGV: as `settle()` (see `lib/settle.lua`), then six more: the lease and
-- batch to mark (`''` for none), then as `LEASE`'s (max batches, which may
-- be 0, ttl, rebatch size, most due retries).
-- Returns `{settle reply, marked (1; 0 when not held; -1 when none asked),
-- lease reply}`.
local n = #ARGV
local settled = settle()
local marked = -1
if ARGV[n - 5] ~= '' then marked = mark(ARGV[n - 5], ARGV[n - 4]) end
local leased = {0, {}}
local max = tonumber(ARGV[n - 3])
if max > 0 then
  leased = lease(max, tonumber(ARGV[n - 2]), tonumber(ARGV[n - 1]), tonumber(ARGV[n]))
end
return {settled, marked, leased}
