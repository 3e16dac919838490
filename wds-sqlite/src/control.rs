//! [`JobControl`] for [`SqliteBackend`]: each call is one transaction.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::params;
use wds_core::{
    backend::{Action, JobControl},
    DeadKind, Error, JobId, JobReport, Result,
};

use crate::backend::{uint, SqliteBackend};
use crate::conn::{db_error, Tx};
use crate::offsets::report_in;
use crate::queue::{bump, replay_in, JobCounts, JobKey};
use crate::turns;

/// The job's counts, once `action` is checked against its state; `None`
/// when the action changes nothing.
fn allowed(tx: &Tx<'_>, path: &Path, job: &JobId, action: Action) -> Result<Option<JobCounts>> {
    let counts = JobCounts::read(tx, path, JobKey::Id(job))?
        .ok_or_else(|| Error::UnknownJob { job: job.clone() })?;
    let changes = action.check(job, counts.halted, counts.finished())?;
    Ok(changes.then_some(counts))
}

/// Sets the job's pause flag and its place in the turns.
fn set_paused(tx: &Tx<'_>, path: &Path, no: i64, paused: bool) -> Result<()> {
    tx.prepare_cached("UPDATE jobs SET paused = ?2 WHERE no = ?1")
        .and_then(|mut s| s.execute(params![no, paused]))
        .map_err(|e| db_error("pause", path, e))?;
    turns::refresh(tx, path, no)
}

/// Drops the job's ready batches and scheduled retries, counting their
/// messages as cancelled, and ends its reading.
fn cancel_in(tx: &Tx<'_>, path: &Path, mut counts: JobCounts) -> Result<()> {
    let sql = |e| db_error("cancel", path, e);
    let no = counts.no;
    let ready: i64 = tx
        .prepare_cached(
            "SELECT coalesce(sum(n), 0) FROM batches WHERE job = ?1 AND pos IS NOT NULL",
        )
        .and_then(|mut s| s.query_row([no], |r| r.get(0)))
        .map_err(sql)?;
    tx.prepare_cached(
        "DELETE FROM payloads WHERE id IN \
         (SELECT id FROM batches WHERE job = ?1 AND pos IS NOT NULL)",
    )
    .and_then(|mut s| s.execute([no]))
    .map_err(sql)?;
    tx.prepare_cached("DELETE FROM batches WHERE job = ?1 AND pos IS NOT NULL")
        .and_then(|mut s| s.execute([no]))
        .map_err(sql)?;
    let scheduled = tx
        .prepare_cached("DELETE FROM scheduled WHERE job = ?1")
        .and_then(|mut s| s.execute([no]))
        .map_err(sql)? as i64;
    // Ends reading as `fail` does: the batcher's next push is stale.
    tx.prepare_cached(
        "UPDATE jobs SET halted = 1, paused = 0, active = 0, \
         seq = seq + (1 - done), done = 1 WHERE no = ?1",
    )
    .and_then(|mut s| s.execute([no]))
    .map_err(sql)?;
    counts.done = true;
    counts.cancelled += uint(ready) + uint(scheduled);
    counts.write(tx, path)?;
    bump(tx, -ready, 0, -scheduled, 0);
    Ok(())
}

impl SqliteBackend {
    /// Runs `action` on the job in one transaction; returns its report.
    async fn control(&self, job: &JobId, action: Action) -> Result<JobReport> {
        let job = job.clone();
        let row = self
            .write(action.as_str(), move |tx, path| {
                if let Some(counts) = allowed(tx, path, &job, action)? {
                    match action {
                        Action::Pause => set_paused(tx, path, counts.no, true)?,
                        Action::Resume => set_paused(tx, path, counts.no, false)?,
                        Action::Cancel => cancel_in(tx, path, counts)?,
                    }
                }
                report_in(tx, path, &job)
            })
            .await?;
        row.report()
    }
}

#[async_trait]
impl JobControl for SqliteBackend {
    async fn act(&self, job: &JobId, action: Action) -> Result<JobReport> {
        self.control(job, action).await
    }

    async fn replay_kind(&self, job: &JobId, kind: DeadKind) -> Result<u64> {
        let job = job.clone();
        self.write("replay_kind", move |tx, path| {
            JobCounts::read(tx, path, JobKey::Id(&job))?
                .ok_or_else(|| Error::UnknownJob { job: job.clone() })?;
            replay_in(tx, path, Some(&job), Some(kind))
        })
        .await
    }
}
