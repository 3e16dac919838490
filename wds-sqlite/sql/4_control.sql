-- Schema version 4: job control (pause, cancel) and fair leasing.

-- `paused`, `halted` (cancelled) are set by an operator; `cancelled`
-- counts the lines that were never sent because of it. `active` is 1 while
-- the job has ready batches and is neither paused nor cancelled; the lease
-- takes a batch of the active job with the lowest `turn`, then gives it
-- the next turn number (round-robin across jobs).
ALTER TABLE jobs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN halted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN active INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN turn INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_turn ON jobs (active, turn);

-- The job (jobs.no) of every message of a batch, and of a scheduled retry.
-- NULL for rows written before this version (a batch of retries could mix
-- jobs then): those are leased first, in push order, outside the turns.
ALTER TABLE batches ADD COLUMN job INTEGER;
CREATE INDEX batches_job ON batches (job, pos);
ALTER TABLE scheduled ADD COLUMN job INTEGER;
CREATE INDEX scheduled_job ON scheduled (job);
