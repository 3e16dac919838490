-- Schema version 3: bounded per-job detail. A job keeps its first
-- `detail_limit` rejects in `rejects`; the rest only their kind, in
-- `reject_runs`.

-- How many of the job's rejects `rejects` holds. Before this version it
-- held every one.
ALTER TABLE jobs ADD COLUMN kept_rejects INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET kept_rejects = invalid + duplicate;

-- Rejected lines past the detail limit, as runs of one kind (see
-- codec.rs): one row per push that had any.
CREATE TABLE reject_runs (
  job        INTEGER NOT NULL,          -- jobs.no
  first_line INTEGER NOT NULL,
  runs       BLOB NOT NULL,
  PRIMARY KEY (job, first_line)
) WITHOUT ROWID;
