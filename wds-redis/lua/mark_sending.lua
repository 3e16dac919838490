--- ARGV: lease batch
-- ARGV: lease, batch. Returns 1, or 0 when the lease is not held.
return mark(ARGV[1], ARGV[2])
