-- Schema version 2: why a job failed (its input changed or vanished while
-- it was read). NULL for every job that did not fail.
ALTER TABLE jobs ADD COLUMN failed TEXT;
