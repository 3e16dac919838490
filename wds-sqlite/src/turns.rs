//! Fair leasing: a job's ready batches are leased in turn with the other
//! jobs', one batch each, rather than in push order across jobs.
//!
//! `jobs.active` is 1 while a job has ready batches and is neither paused
//! nor cancelled; every change to a job's ready batches or its pause that
//! may change it recomputes it ([`refresh`]; a push to a job already active
//! leaves it so). The lease takes the oldest ready batch of the active job
//! with the lowest `turn`, then gives that job the next number.

use std::path::Path;

use rusqlite::{params, OptionalExtension};
use wds_core::Result;

use crate::conn::{db_error, Tx};

/// A batch as the lease reads it: id, messages, payload, sending.
pub(crate) type ReadyRow = (i64, i64, Vec<u8>, bool);

fn read_batch(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReadyRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// Recomputes whether job `no` may be leased from.
pub(crate) fn refresh(tx: &Tx<'_>, path: &Path, no: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE jobs SET active = (paused = 0 AND halted = 0 AND EXISTS \
         (SELECT 1 FROM batches WHERE batches.job = ?1 AND pos IS NOT NULL)) WHERE no = ?1",
    )
    .and_then(|mut s| s.execute([no]))
    .map(drop)
    .map_err(|e| db_error("turns", path, e))
}

/// Leases up to `max` ready batches until `deadline`: first those written
/// before jobs had turns, then one of each active job in turn. Each is
/// taken off the ready list and given its lease (number from `lease_no`) by
/// one `UPDATE`, and a job's next turn and whether it stays active by
/// another: the statements (and the pages) a lease writes per batch.
pub(crate) fn take(
    tx: &Tx<'_>,
    path: &Path,
    max: usize,
    turn: i64,
    deadline: i64,
    mut lease_no: impl FnMut() -> i64,
) -> Result<Vec<(i64, ReadyRow)>> {
    let sql = |e| db_error("lease", path, e);
    let legacy: Vec<ReadyRow> = tx
        .prepare_cached(
            "SELECT b.id, b.n, coalesce(p.payload, x''), b.sending \
             FROM batches b LEFT JOIN payloads p ON p.id = b.id \
             WHERE b.job IS NULL AND b.pos IS NOT NULL ORDER BY b.pos",
        )
        .and_then(|mut s| s.query_map([], read_batch)?.take(max).collect())
        .map_err(sql)?;
    let mut out = Vec::with_capacity(max);
    for batch in legacy {
        let no = lease_no();
        grant(tx, path, batch.0, no, deadline)?;
        out.push((no, batch));
    }
    let mut turn = turn;
    while out.len() < max {
        let Some(job) = tx
            .prepare_cached("SELECT no FROM jobs WHERE active = 1 ORDER BY turn LIMIT 1")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
            .map_err(sql)?
        else {
            break;
        };
        let batch = tx
            .prepare_cached(
                "SELECT b.id, b.n, coalesce(p.payload, x''), b.sending \
                 FROM batches b LEFT JOIN payloads p ON p.id = b.id \
                 WHERE b.job = ?1 AND b.pos IS NOT NULL ORDER BY b.pos LIMIT 1",
            )
            .and_then(|mut s| s.query_row([job], read_batch).optional())
            .map_err(sql)?;
        if let Some(batch) = batch {
            let no = lease_no();
            grant(tx, path, batch.0, no, deadline)?;
            out.push((no, batch));
        }
        turn += 1;
        // The next turn and the refresh of `active` in one statement.
        tx.prepare_cached(
            "UPDATE jobs SET turn = ?2, active = (paused = 0 AND halted = 0 AND EXISTS \
             (SELECT 1 FROM batches WHERE batches.job = ?1 AND pos IS NOT NULL)) WHERE no = ?1",
        )
        .and_then(|mut s| s.execute(params![job, turn]))
        .map_err(sql)?;
    }
    Ok(out)
}

/// Puts job `no` first in turn (a released batch goes out first).
pub(crate) fn first(tx: &Tx<'_>, path: &Path, no: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE jobs SET turn = (SELECT coalesce(min(turn), 0) - 1 FROM jobs) WHERE no = ?1",
    )
    .and_then(|mut s| s.execute([no]))
    .map_err(|e| db_error("turns", path, e))?;
    refresh(tx, path, no)
}

/// Leases batch `id` as lease `no` until `deadline` (off the ready list).
pub(crate) fn grant(tx: &Tx<'_>, path: &Path, id: i64, no: i64, deadline: i64) -> Result<()> {
    tx.prepare_cached("UPDATE batches SET lease = ?2, deadline = ?3, pos = NULL WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, no, deadline]))
        .map(drop)
        .map_err(|e| db_error("lease", path, e))
}
