-- Schema version 8: batch payloads in a table of their own, and no index
-- on `pos` alone.
--
-- A batch row changes three times in its life (leased, maybe marked as
-- sending, settled); its payload (about 5 KB for 100 messages) never does.
-- Inside the batch row, every change that resized the row (a lease sets
-- `lease` and `deadline` and clears `pos`) made SQLite rewrite the payload's
-- overflow page too, and a leaf held two batches at most, so each call
-- dirtied pages of its own. The payload is now written once at the push and
-- deleted with its batch; batch rows are ~30 bytes, a hundred to a page.
CREATE TABLE payloads (
  id      INTEGER PRIMARY KEY,          -- batches.id
  payload BLOB NOT NULL
);
INSERT INTO payloads (id, payload) SELECT id, payload FROM batches;
ALTER TABLE batches DROP COLUMN payload;

-- Ready batches are leased one job at a time, in `pos` order within the
-- job (`batches_job`); nothing reads them in `pos` order across jobs any
-- more (a released batch goes first among its job's), so the index on
-- `pos` alone only cost a write on every push, lease and settle.
DROP INDEX batches_ready;
