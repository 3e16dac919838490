-- Schema version 7: the workers seen (wds_core::workers), one row per
-- worker id with its last beat; rows past the retention are deleted by
-- the next beat.
CREATE TABLE workers (
  worker  TEXT PRIMARY KEY,
  beat    TEXT NOT NULL,               -- WorkerBeat as JSON
  seen_ms INTEGER NOT NULL             -- when it was stored (Unix ms)
) WITHOUT ROWID;
