-- Schema version 8: reserved. Another branch (in review at the same time)
-- adds its migration 8 here; this placeholder only keeps the numbers in
-- order on this branch and is replaced by that migration when both merge.
SELECT 1;
