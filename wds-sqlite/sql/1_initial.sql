-- Schema version 1 of the WDS SQLite backend (PRAGMA user_version = 1).

-- Input identity -> job id: a job is made once per identity.
CREATE TABLE claims (
  identity TEXT PRIMARY KEY,
  job      TEXT NOT NULL
) WITHOUT ROWID;

-- One row per job: metadata, the read checkpoint and the G2 counts.
-- `no` is the claim order (newest first in reports) and the short key
-- every per-line table uses.
CREATE TABLE jobs (
  no          INTEGER PRIMARY KEY,
  job         TEXT NOT NULL UNIQUE,
  meta        TEXT NOT NULL,            -- JobMeta as JSON
  seq         INTEGER NOT NULL DEFAULT 0,
  byte        INTEGER NOT NULL DEFAULT 0,
  line        INTEGER NOT NULL DEFAULT 0,
  records     INTEGER NOT NULL DEFAULT 0,
  done        INTEGER NOT NULL DEFAULT 0,
  enqueued    INTEGER NOT NULL DEFAULT 0,
  delivered   INTEGER NOT NULL DEFAULT 0,
  dead        INTEGER NOT NULL DEFAULT 0,
  in_doubt    INTEGER NOT NULL DEFAULT 0,
  invalid     INTEGER NOT NULL DEFAULT 0,
  duplicate   INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER
);

-- Batches of messages: ready (`pos` set, lease order) or leased (`lease`
-- and `deadline` set, `pos` NULL). `sending` is sticky once a holder marked it.
CREATE TABLE batches (
  id       INTEGER PRIMARY KEY,
  n        INTEGER NOT NULL,
  payload  BLOB NOT NULL,
  pos      INTEGER,
  lease    INTEGER,
  deadline INTEGER,
  sending  INTEGER NOT NULL DEFAULT 0
);
-- Full indexes, not partial ones: with a partial index SQLite re-prepares
-- every statement on the table whose bound values it compared with the
-- index's condition, on every call.
CREATE INDEX batches_ready ON batches (pos);
CREATE INDEX batches_leased ON batches (deadline);

-- Messages waiting for a retry, by due time.
CREATE TABLE scheduled (
  id      INTEGER PRIMARY KEY,
  due     INTEGER NOT NULL,
  message BLOB NOT NULL
);
CREATE INDEX scheduled_due ON scheduled (due);

-- Dead letters, until replayed.
CREATE TABLE dead (
  id      INTEGER PRIMARY KEY,
  job     INTEGER NOT NULL,             -- jobs.no
  message BLOB NOT NULL,
  kind    INTEGER NOT NULL,             -- 1 permanent, 2 exhausted, 3 in doubt
  detail  TEXT NOT NULL,
  at_ms   INTEGER NOT NULL
);
CREATE INDEX dead_job ON dead (job);

-- Per-line outcomes of settles and replays, packed: one row per job,
-- chunk of 1024 lines and settle (see codec.rs); the last entry of a line wins.
CREATE TABLE outcomes (
  job     INTEGER NOT NULL,             -- jobs.no
  chunk   INTEGER NOT NULL,
  entries BLOB NOT NULL
);
CREATE INDEX outcomes_chunk ON outcomes (job, chunk);

-- Rejected lines (invalid, duplicate), packed: one row per push that had any.
CREATE TABLE rejects (
  job        INTEGER NOT NULL,          -- jobs.no
  first_line INTEGER NOT NULL,
  entries    BLOB NOT NULL,
  PRIMARY KEY (job, first_line)
) WITHOUT ROWID;
