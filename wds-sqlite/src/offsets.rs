//! [`OffsetStore`] for [`SqliteBackend`]: claims, checkpoints, reports and
//! per-line outcomes.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use wds_core::{
    backend::{now_ms, Checkpoint, Claim, LineOutcome, OffsetStore, Reject},
    Error, JobId, JobMeta, JobReport, JobState, MessageId, Result,
};

use crate::backend::{int, uint, SqliteBackend};
use crate::codec::{self, CHUNK_LINES};
use crate::conn::{db_error, Tx};

/// The columns of a report, in [`ReportRow`] order.
const REPORT_COLUMNS: &str = "job, meta, records, done, enqueued, delivered, dead, in_doubt, \
                              invalid, duplicate, finished_ms, failed, cancelled, paused, halted,
                              permanent, exhausted";

/// A job row as read for a report; its metadata is parsed on the async side.
pub(crate) struct ReportRow {
    job: String,
    meta: String,
    records: u64,
    done: bool,
    enqueued: u64,
    delivered: u64,
    dead: u64,
    in_doubt: u64,
    invalid: u64,
    duplicate: u64,
    finished_ms: Option<i64>,
    failed: Option<String>,
    cancelled: u64,
    paused: bool,
    halted: bool,
    permanent: u64,
    exhausted: u64,
}

impl ReportRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRow> {
        Ok(ReportRow {
            job: r.get(0)?,
            meta: r.get(1)?,
            records: uint(r.get(2)?),
            done: r.get(3)?,
            enqueued: uint(r.get(4)?),
            delivered: uint(r.get(5)?),
            dead: uint(r.get(6)?),
            in_doubt: uint(r.get(7)?),
            invalid: uint(r.get(8)?),
            duplicate: uint(r.get(9)?),
            finished_ms: r.get(10)?,
            failed: r.get(11)?,
            cancelled: uint(r.get(12)?),
            paused: r.get(13)?,
            halted: r.get(14)?,
            permanent: uint(r.get(15)?),
            exhausted: uint(r.get(16)?),
        })
    }

    pub(crate) fn report(self) -> Result<JobReport> {
        let job = JobId::new(self.job);
        let meta = parse_meta(&job, &self.meta)?;
        let accounted = self.delivered + self.dead + self.invalid + self.duplicate + self.cancelled;
        let state = JobState::of(self.failed.is_some(), self.done, accounted, self.records)
            .controlled(self.paused, self.halted);
        let mut report = JobReport::new(job, meta, state);
        report.lines = self.records;
        report.enqueued = self.enqueued;
        report.delivered = self.delivered;
        report.dead = self.dead;
        report.in_doubt = self.in_doubt;
        report.permanent = self.permanent;
        report.exhausted = self.exhausted;
        report.invalid = self.invalid;
        report.duplicate = self.duplicate;
        report.cancelled = self.cancelled;
        report.finished_ms = self.finished_ms.map(uint);
        report.failure = self.failed;
        Ok(report)
    }
}

/// The report row of a job, or `UnknownJob`.
pub(crate) fn report_in(tx: &Tx<'_>, path: &Path, job: &JobId) -> Result<ReportRow> {
    tx.prepare_cached(&format!("SELECT {REPORT_COLUMNS} FROM jobs WHERE job = ?1"))
        .and_then(|mut s| s.query_row([job.as_str()], ReportRow::read).optional())
        .map_err(|e| db_error("report", path, e))?
        .ok_or_else(|| Error::UnknownJob { job: job.clone() })
}

fn parse_meta(job: &JobId, meta: &str) -> Result<JobMeta> {
    serde_json::from_str(meta).map_err(|e| Error::Corrupt {
        key: format!("jobs.meta of {job}"),
        detail: e.to_string(),
    })
}

/// The claim-order number of a job, or `UnknownJob`.
fn job_no(tx: &Tx<'_>, path: &Path, job: &JobId) -> Result<i64> {
    tx.prepare_cached("SELECT no FROM jobs WHERE job = ?1")
        .and_then(|mut s| s.query_row([job.as_str()], |r| r.get(0)).optional())
        .map_err(|e| db_error("job", path, e))?
        .ok_or_else(|| Error::UnknownJob { job: job.clone() })
}

/// The first line and blob of job `no`'s row that `select` finds for `line`
/// (the one starting nearest at or before it).
fn row_at_or_before(
    tx: &Tx<'_>,
    select: &str,
    no: i64,
    line: u64,
) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
    tx.prepare_cached(select).and_then(|mut s| {
        s.query_row(params![no, int(line)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    })
}

#[async_trait]
impl OffsetStore for SqliteBackend {
    async fn claim(&self, identity: &str, meta: JobMeta) -> Result<Claim> {
        let identity = identity.to_string();
        let fresh_job = JobId::from_identity(&identity);
        let meta_json = serde_json::to_string(&meta).map_err(|e| Error::Corrupt {
            key: format!("job {fresh_job}"),
            detail: format!("cannot encode the job's metadata: {e}"),
        })?;
        let (fresh, job, stored) = self
            .write("claim", move |tx, path| {
                let sql = |e| db_error("claim", path, e);
                let meta_of = |job: &str| -> Result<Option<String>> {
                    tx.prepare_cached("SELECT meta FROM jobs WHERE job = ?1")
                        .and_then(|mut s| s.query_row([job], |r| r.get(0)).optional())
                        .map_err(sql)
                };
                let claimed: Option<String> = tx
                    .prepare_cached("SELECT job FROM claims WHERE identity = ?1")
                    .and_then(|mut s| s.query_row([&identity], |r| r.get(0)).optional())
                    .map_err(sql)?;
                if let Some(job) = claimed {
                    let meta = meta_of(&job)?.unwrap_or_default();
                    return Ok((false, job, meta));
                }
                let job = fresh_job.to_string();
                tx.prepare_cached("INSERT INTO claims (identity, job) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute([&identity, &job]))
                    .map_err(sql)?;
                // Two identities with one 64-bit job id: never reset the job.
                if let Some(meta) = meta_of(&job)? {
                    return Ok((false, job, meta));
                }
                tx.prepare_cached("INSERT INTO jobs (job, meta) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute([&job, &meta_json]))
                    .map_err(sql)?;
                Ok((true, job, meta_json))
            })
            .await?;
        let job = JobId::new(job);
        let meta = if fresh {
            meta
        } else {
            parse_meta(&job, &stored)?
        };
        Ok(Claim { job, fresh, meta })
    }

    async fn checkpoint(&self, job: &JobId) -> Result<Checkpoint> {
        let job = job.clone();
        self.read("checkpoint", move |tx, path| {
            tx.prepare_cached("SELECT seq, byte, line, records, done FROM jobs WHERE job = ?1")
                .and_then(|mut s| {
                    s.query_row([job.as_str()], |r| {
                        Ok(Checkpoint {
                            seq: uint(r.get(0)?),
                            byte: uint(r.get(1)?),
                            line: uint(r.get(2)?),
                            records: uint(r.get(3)?),
                            done: r.get(4)?,
                        })
                    })
                    .optional()
                })
                .map_err(|e| db_error("checkpoint", path, e))?
                .ok_or(Error::UnknownJob { job })
        })
        .await
    }

    async fn report(&self, job: &JobId) -> Result<Option<JobReport>> {
        let job = job.clone();
        let row = self
            .read("report", move |tx, path| {
                tx.prepare_cached(&format!("SELECT {REPORT_COLUMNS} FROM jobs WHERE job = ?1"))
                    .and_then(|mut s| s.query_row([job.as_str()], ReportRow::read).optional())
                    .map_err(|e| db_error("report", path, e))
            })
            .await?;
        row.map(ReportRow::report).transpose()
    }

    async fn reports(&self) -> Result<Vec<JobReport>> {
        let rows = self
            .read("reports", |tx, path| {
                tx.prepare_cached(&format!(
                    "SELECT {REPORT_COLUMNS} FROM jobs ORDER BY no DESC"
                ))
                .and_then(|mut s| {
                    s.query_map([], ReportRow::read)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|e| db_error("reports", path, e))
            })
            .await?;
        rows.into_iter().map(ReportRow::report).collect()
    }

    async fn fail(&self, job: &JobId, reason: &str) -> Result<JobReport> {
        let (job, reason) = (job.clone(), reason.to_string());
        let row = self
            .write("fail", move |tx, path| {
                let sql = |e| db_error("fail", path, e);
                // A fully read job (failed already included) is left as it is.
                tx.prepare_cached(
                    "UPDATE jobs SET done = 1, seq = seq + 1, failed = ?2, \
                         finished_ms = CASE WHEN delivered + dead + invalid + duplicate = records \
                         THEN ?3 ELSE finished_ms END \
                         WHERE job = ?1 AND done = 0",
                )
                .and_then(|mut s| s.execute(params![job.as_str(), reason, int(now_ms())]))
                .map_err(sql)?;
                tx.prepare_cached(&format!("SELECT {REPORT_COLUMNS} FROM jobs WHERE job = ?1"))
                    .and_then(|mut s| s.query_row([job.as_str()], ReportRow::read).optional())
                    .map_err(sql)?
                    .ok_or(Error::UnknownJob { job })
            })
            .await?;
        row.report()
    }

    async fn outcome(&self, id: &MessageId) -> Result<Option<LineOutcome>> {
        let id = id.clone();
        self.read("outcome", move |tx, path| {
            let sql = |e| db_error("outcome", path, e);
            let no = job_no(tx, path, &id.job)?;
            let rows: Vec<Vec<u8>> = tx
                .prepare_cached(
                    "SELECT entries FROM outcomes WHERE job = ?1 AND chunk = ?2 ORDER BY rowid",
                )
                .and_then(|mut s| {
                    s.query_map(params![no, int(id.line / CHUNK_LINES)], |r| r.get(0))?
                        .collect()
                })
                .map_err(sql)?;
            if let Some(found) = codec::find_outcome(&rows, id.line)? {
                return Ok(found);
            }
            // Rejected lines: in the row of the push whose first reject is
            // the nearest at or before the line.
            let row = row_at_or_before(
                tx,
                "SELECT first_line, entries FROM rejects WHERE job = ?1 AND first_line <= ?2 \
                 ORDER BY first_line DESC LIMIT 1",
                no,
                id.line,
            )
            .map_err(sql)?;
            if let Some((first, entries)) = row {
                let kept = codec::decode_rejects(uint(first), &entries)?
                    .into_iter()
                    .find(|r| r.line == id.line);
                if let Some(r) = kept {
                    return Ok(Some(LineOutcome::Rejected { kind: r.kind }));
                }
            }
            // Rejected past the detail limit: its kind, in the runs of its push.
            let row = row_at_or_before(
                tx,
                "SELECT first_line, runs FROM reject_runs WHERE job = ?1 AND first_line <= ?2 \
                 ORDER BY first_line DESC LIMIT 1",
                no,
                id.line,
            )
            .map_err(sql)?;
            let Some((first, runs)) = row else {
                return Ok(None);
            };
            Ok(codec::find_in_runs(uint(first), &runs, id.line)?
                .map(|kind| LineOutcome::Rejected { kind }))
        })
        .await
    }

    async fn rejects(&self, job: &JobId, limit: usize) -> Result<Vec<Reject>> {
        let job = job.clone();
        self.read("rejects", move |tx, path| {
            let no = job_no(tx, path, &job)?;
            let mut out = Vec::new();
            let mut stmt = tx
                .prepare_cached(
                    "SELECT first_line, entries FROM rejects WHERE job = ?1 ORDER BY first_line",
                )
                .map_err(|e| db_error("rejects", path, e))?;
            let mut rows = stmt.query([no]).map_err(|e| db_error("rejects", path, e))?;
            while out.len() < limit {
                let Some(row) = rows.next().map_err(|e| db_error("rejects", path, e))? else {
                    break;
                };
                let first: i64 = row.get(0).map_err(|e| db_error("rejects", path, e))?;
                let entries: Vec<u8> = row.get(1).map_err(|e| db_error("rejects", path, e))?;
                out.extend(codec::decode_rejects(uint(first), &entries)?);
            }
            out.truncate(limit);
            Ok(out)
        })
        .await
    }
}
