//! [`Queue`] for [`SqliteBackend`]: each call is one transaction.
//!
//! The async side encodes arguments and decodes answers (see `codec`); the
//! connection thread runs only SQL over prepared, cached statements. No
//! statement has a bound `LIMIT`: SQLite re-prepares a statement whenever
//! the value bound to its `LIMIT` changes, so rows are taken from the
//! iterator instead (in index order, so no more are read).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use wds_core::{
    backend::{
        now_ms, Batch, BatchId, Checkpoint, Continue, Continued, Lease, LeaseId, Push, Pushed,
        Queue, QueueStats, Reject, RejectKind, Settle, DETAIL_NOT_KEPT,
    },
    DeadKind, DeadLetter, DeadReason, Error, JobId, Result,
};

use crate::backend::{int, uint, SqliteBackend, MAX_DUE_PER_LEASE, REBATCH_SIZE};
use crate::codec::{self, Chunks, Entry};
use crate::conn::{db_error, Tx};
use crate::turns;

/// A push, encoded for the connection thread.
struct PushRow {
    job: JobId,
    seq: u64,
    next: Checkpoint,
    n: u64,
    payload: Vec<u8>,
    invalid: u64,
    duplicate: u64,
    /// The rejects, in line order (encoded on the connection thread, which
    /// knows how many the job may still keep in detail).
    rejects: Vec<Reject>,
}

impl PushRow {
    fn new(push: &Push) -> PushRow {
        let (mut invalid, mut duplicate) = (0, 0);
        for r in &push.rejects {
            match r.kind {
                RejectKind::Invalid { .. } => invalid += 1,
                RejectKind::Duplicate { .. } => duplicate += 1,
            }
        }
        let mut rejects = push.rejects.clone();
        rejects.sort_by_key(|r| r.line);
        PushRow {
            job: push.job.clone(),
            seq: push.seq(),
            next: push.next,
            n: push.messages.len() as u64,
            payload: if push.messages.is_empty() {
                Vec::new()
            } else {
                codec::encode_messages(&push.messages)
            },
            invalid,
            duplicate,
            rejects,
        }
    }
}

/// What a push did, or the error that refused it.
enum PushOutcome {
    Done(Pushed),
    Refused(Error),
}

/// A leased batch as the thread returns it.
struct LeasedRow {
    id: i64,
    no: i64,
    payload: Vec<u8>,
    sending: bool,
}

/// A settle, encoded for the connection thread.
struct SettleRow {
    key: (i64, i64),
    lease: LeaseId,
    batch: BatchId,
    n: u64,
    groups: Vec<Group>,
    /// Job, due time and encoded message per retry.
    retries: Vec<(JobId, u64, Vec<u8>)>,
}

/// One job's part of a settle.
struct Group {
    job: JobId,
    delivered: u64,
    /// The dead rows' count by reason, at [`DeadKind::index`].
    dead_by_kind: [u64; 3],
    dead: Vec<DeadRow>,
    /// The delivered lines' outcome chunks.
    chunks: Vec<(u64, Vec<u8>)>,
}

/// A dead letter; whether it keeps its detail is decided on the
/// connection thread, which knows how many the job has.
struct DeadRow {
    line: u64,
    message: Vec<u8>,
    reason: DeadReason,
}

impl SettleRow {
    fn new(lease: &Lease, outcomes: &[Settle]) -> Result<SettleRow> {
        Settle::check_covers(&lease.batch, outcomes)?;
        let key = lease_key(lease).ok_or_else(|| lost(lease))?;
        let mut groups: Vec<(Group, Chunks)> = Vec::new();
        let mut retries = Vec::new();
        fn group(groups: &mut Vec<(Group, Chunks)>, job: &JobId) -> usize {
            match groups.iter().position(|(g, _)| &g.job == job) {
                Some(i) => i,
                None => {
                    groups.push((
                        Group {
                            job: job.clone(),
                            delivered: 0,
                            dead_by_kind: [0; 3],
                            dead: Vec::new(),
                            chunks: Vec::new(),
                        },
                        Chunks::default(),
                    ));
                    groups.len() - 1
                }
            }
        }
        for outcome in outcomes {
            match outcome {
                Settle::Delivered { id, receipt } => {
                    let i = group(&mut groups, &id.job);
                    groups[i].0.delivered += 1;
                    groups[i].1.add(id.line, Entry::Delivered(receipt));
                }
                Settle::Dead { message, reason } => {
                    let i = group(&mut groups, &message.id.job);
                    let g = &mut groups[i].0;
                    g.dead_by_kind[reason.kind.index()] += 1;
                    g.dead.push(DeadRow {
                        line: message.id.line,
                        message: codec::encode_messages([message]),
                        reason: reason.clone(),
                    });
                }
                Settle::Retry { message, at_ms } => {
                    retries.push((
                        message.id.job.clone(),
                        *at_ms,
                        codec::encode_messages([message]),
                    ));
                }
            }
        }
        Ok(SettleRow {
            key,
            lease: lease.id.clone(),
            batch: lease.batch.id.clone(),
            n: outcomes.len() as u64,
            groups: groups
                .into_iter()
                .map(|(mut g, chunks)| {
                    g.chunks = chunks.into_blobs();
                    g
                })
                .collect(),
            retries,
        })
    }
}

fn dead_kind_code(kind: DeadKind) -> i64 {
    match kind {
        DeadKind::Permanent => 1,
        DeadKind::Exhausted => 2,
        DeadKind::InDoubt => 3,
    }
}

fn dead_kind(code: i64) -> Result<DeadKind> {
    match code {
        1 => Ok(DeadKind::Permanent),
        2 => Ok(DeadKind::Exhausted),
        3 => Ok(DeadKind::InDoubt),
        other => Err(Error::Corrupt {
            key: "dead.kind".into(),
            detail: format!("unknown kind {other}"),
        }),
    }
}

/// The batch row id and lease number a lease id names (`<batch>#<no>`).
fn lease_key(lease: &Lease) -> Option<(i64, i64)> {
    let (batch, no) = lease.id.as_str().rsplit_once('#')?;
    if batch != lease.batch.id.as_str() {
        return None;
    }
    Some((batch.parse().ok()?, no.parse().ok()?))
}

fn lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        lease: lease.id.clone(),
        batch: lease.batch.id.clone(),
    }
}

/// Whether an error came from SQLite itself (which aborts the whole call)
/// rather than from the call's rules (which only fail its part).
fn is_storage(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Corrupt { .. })
}

/// Adds to the queue counters; returns the ready count after.
pub(crate) fn bump(tx: &Tx<'_>, ready: i64, leased: i64, scheduled: i64, dead: i64) -> u64 {
    let mut c = tx.counters.get();
    c.ready += ready;
    c.leased += leased;
    c.scheduled += scheduled;
    c.dead += dead;
    tx.counters.set(c);
    uint(c.ready)
}

/// Takes `k` numbers from the counter; returns the first.
fn take_numbers(tx: &Tx<'_>, k: usize) -> i64 {
    let mut c = tx.counters.get();
    let first = c.next + 1;
    c.next += k as i64;
    tx.counters.set(c);
    first
}

/// The finish time a job has after its counts changed.
pub(crate) fn finish(
    done: bool,
    accounted: u64,
    records: u64,
    previous: Option<i64>,
    now: u64,
) -> Option<i64> {
    if done && accounted == records {
        Some(previous.unwrap_or(int(now)))
    } else {
        None
    }
}

/// Adds a ready batch (its position is its id) and its payload.
fn insert_batch(
    tx: &Tx<'_>,
    path: &Path,
    id: i64,
    n: i64,
    payload: &[u8],
    job: Option<i64>,
) -> Result<()> {
    let sql = |e| db_error("push", path, e);
    tx.prepare_cached("INSERT INTO batches (id, n, pos, job) VALUES (?1, ?2, ?1, ?3)")
        .and_then(|mut s| s.execute(params![id, n, job]))
        .map_err(sql)?;
    tx.prepare_cached("INSERT INTO payloads (id, payload) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![id, payload]))
        .map_err(sql)?;
    Ok(())
}

/// Deletes batch `id` and its payload.
pub(crate) fn delete_batch(tx: &Tx<'_>, path: &Path, id: i64) -> Result<()> {
    let sql = |e| db_error("delete batch", path, e);
    tx.prepare_cached("DELETE FROM batches WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(sql)?;
    tx.prepare_cached("DELETE FROM payloads WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(sql)?;
    Ok(())
}

/// Appends messages as new ready batches of [`REBATCH_SIZE`], each of one
/// job's messages.
fn rebatch(tx: &Tx<'_>, path: &Path, messages: &[wds_core::Message]) -> Result<()> {
    let sql = |e| db_error("rebatch", path, e);
    let mut by_job: Vec<(&JobId, Vec<wds_core::Message>)> = Vec::new();
    for m in messages {
        match by_job.iter_mut().find(|(j, _)| *j == &m.id.job) {
            Some((_, group)) => group.push(m.clone()),
            None => by_job.push((&m.id.job, vec![m.clone()])),
        }
    }
    for (job, group) in by_job {
        let no: Option<i64> = tx
            .prepare_cached("SELECT no FROM jobs WHERE job = ?1")
            .and_then(|mut s| s.query_row([job.as_str()], |r| r.get(0)).optional())
            .map_err(sql)?;
        for chunk in group.chunks(REBATCH_SIZE) {
            let id = take_numbers(tx, 1);
            insert_batch(
                tx,
                path,
                id,
                chunk.len() as i64,
                &codec::encode_messages(chunk),
                no,
            )?;
        }
        if let Some(no) = no {
            turns::refresh(tx, path, no)?;
        }
    }
    Ok(())
}

/// Stores a push's rejects: the first ones in detail while the job keeps
/// fewer than `limit`, the rest as runs of their kind. Returns how many
/// were kept in detail.
fn store_rejects(tx: &Tx<'_>, path: &Path, no: i64, room: u64, rejects: &[Reject]) -> Result<u64> {
    let sql = |e| db_error("push", path, e);
    let kept = rejects
        .len()
        .min(usize::try_from(room).unwrap_or(usize::MAX));
    let (detailed, short) = rejects.split_at(kept);
    if let Some(first) = detailed.first().map(|r| r.line) {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO rejects (job, first_line, entries) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| {
            s.execute(params![
                no,
                int(first),
                codec::encode_rejects(first, detailed)
            ])
        })
        .map_err(sql)?;
    }
    if !short.is_empty() {
        let (first, runs) = codec::encode_runs(short);
        tx.prepare_cached(
            "INSERT OR REPLACE INTO reject_runs (job, first_line, runs) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![no, int(first), runs]))
        .map_err(sql)?;
    }
    Ok(kept as u64)
}

fn push_in(tx: &Tx<'_>, path: &Path, p: &PushRow, limit: u64) -> Result<PushOutcome> {
    let sql = |e| db_error("push", path, e);
    let row = tx
        .prepare_cached(
            "SELECT no, seq, enqueued, delivered, dead, invalid, duplicate, finished_ms, \
             kept_rejects, active FROM jobs WHERE job = ?1",
        )
        .and_then(|mut s| {
            s.query_row([p.job.as_str()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    uint(r.get(1)?),
                    uint(r.get(2)?),
                    uint(r.get(3)?),
                    uint(r.get(4)?),
                    uint(r.get(5)?),
                    uint(r.get(6)?),
                    r.get::<_, Option<i64>>(7)?,
                    uint(r.get(8)?),
                    r.get::<_, bool>(9)?,
                ))
            })
            .optional()
        })
        .map_err(sql)?;
    let Some((no, current, enqueued, delivered, dead, invalid, duplicate, finished, kept, active)) =
        row
    else {
        return Ok(PushOutcome::Refused(Error::UnknownJob {
            job: p.job.clone(),
        }));
    };
    if p.seq < current {
        let depth = bump(tx, 0, 0, 0, 0);
        return Ok(PushOutcome::Done(Pushed {
            applied: false,
            depth,
        }));
    }
    if p.seq > current {
        return Ok(PushOutcome::Refused(Error::Conflict {
            job: p.job.clone(),
            seq: p.seq,
            current,
        }));
    }
    if p.n > 0 {
        let id = take_numbers(tx, 1);
        insert_batch(tx, path, id, int(p.n), &p.payload, Some(no))?;
        // An active job stays active with one more ready batch: only an
        // inactive one (its first push, or drained) needs its flag
        // recomputed, which also rewrites its entry in `jobs_turn`.
        if !active {
            turns::refresh(tx, path, no)?;
        }
    }
    let kept = kept + store_rejects(tx, path, no, limit.saturating_sub(kept), &p.rejects)?;
    let invalid = invalid + p.invalid;
    let duplicate = duplicate + p.duplicate;
    let finished = finish(
        p.next.done,
        delivered + dead + invalid + duplicate,
        p.next.records,
        finished,
        now_ms(),
    );
    tx.prepare_cached(
        "UPDATE jobs SET seq = ?2, byte = ?3, line = ?4, records = ?5, done = ?6, \
         enqueued = ?7, invalid = ?8, duplicate = ?9, finished_ms = ?10, kept_rejects = ?11 \
         WHERE no = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            no,
            int(p.next.seq),
            int(p.next.byte),
            int(p.next.line),
            int(p.next.records),
            p.next.done,
            int(enqueued + p.n),
            int(invalid),
            int(duplicate),
            finished,
            int(kept)
        ])
    })
    .map_err(sql)?;
    let depth = bump(tx, int(p.n), 0, 0, 0);
    Ok(PushOutcome::Done(Pushed {
        applied: true,
        depth,
    }))
}

/// Moves the dead letters of `job` (or of every job not cancelled), of
/// `kind` only when given, back to ready; returns how many.
pub(crate) fn replay_in(
    tx: &Tx<'_>,
    path: &Path,
    job: Option<&JobId>,
    kind: Option<DeadKind>,
) -> Result<u64> {
    let sql = |e| db_error("replay", path, e);
    let no = match &job {
        Some(job) => match JobCounts::read(tx, path, JobKey::Id(job))? {
            Some(counts) => Some(counts.no),
            None => return Ok(0),
        },
        None => None,
    };
    // A cancelled job's dead letters stay dead.
    const CHOSEN: &str = "(?1 IS NULL OR job = ?1) AND (?2 IS NULL OR kind = ?2) \
                              AND job NOT IN (SELECT no FROM jobs WHERE halted = 1)";
    let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
    let kind = kind.map(dead_kind_code);
    let rows: Vec<(i64, Vec<u8>, i64)> = tx
        .prepare_cached(&format!(
            "SELECT job, message, kind FROM dead WHERE {CHOSEN} ORDER BY id"
        ))
        .and_then(|mut s| s.query_map(params![no, kind], map)?.collect())
        .map_err(sql)?;
    if rows.is_empty() {
        return Ok(0);
    }
    tx.prepare_cached(&format!("DELETE FROM dead WHERE {CHOSEN}"))
        .and_then(|mut s| s.execute(params![no, kind]))
        .map_err(sql)?;
    // Per job: counts down, and its lines pending again.
    let mut per_job: Vec<(i64, u64, [u64; 3], Chunks)> = Vec::new();
    let mut messages = Vec::with_capacity(rows.len());
    for (job_no, blob, kind) in &rows {
        let i = match per_job.iter().position(|(n, ..)| n == job_no) {
            Some(i) => i,
            None => {
                per_job.push((*job_no, 0, [0; 3], Chunks::default()));
                per_job.len() - 1
            }
        };
        let entry = &mut per_job[i];
        entry.1 += 1;
        entry.2[dead_kind(*kind)?.index()] += 1;
        for mut message in codec::decode_messages(blob)? {
            entry.3.add(message.id.line, Entry::Pending);
            message.attempts = 0;
            message.first_attempt_ms = None;
            messages.push(message);
        }
    }
    for (job_no, dead, by_kind, chunks) in per_job {
        if let Some(mut counts) = JobCounts::read(tx, path, JobKey::No(job_no))? {
            counts.dead = counts.dead.saturating_sub(dead);
            for (count, replayed) in counts.dead_by_kind.iter_mut().zip(by_kind) {
                *count = count.saturating_sub(replayed);
            }
            counts.write(tx, path)?;
            insert_chunks(tx, path, job_no, &chunks.into_blobs())?;
        }
    }
    rebatch(tx, path, &messages)?;
    bump(tx, messages.len() as i64, 0, 0, -(rows.len() as i64));
    Ok(rows.len() as u64)
}

/// Reclaims expired leases, promotes due retries, leases ready batches.
fn lease_in(tx: &Tx<'_>, path: &Path, max: usize, ttl: Duration) -> Result<(u64, Vec<LeasedRow>)> {
    let sql = |e| db_error("lease", path, e);
    let now = now_ms();
    let deadline = now + ttl.as_millis() as u64;
    let read_batch = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, i64, Vec<u8>, bool)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    };
    // 1. Expired leases first: their holders are presumed dead.
    let batches: Vec<(i64, i64, Vec<u8>, bool)> = tx
        .prepare_cached(
            "SELECT b.id, b.n, coalesce(p.payload, x''), b.sending \
             FROM batches b LEFT JOIN payloads p ON p.id = b.id \
             WHERE b.deadline <= ?1 ORDER BY b.deadline",
        )
        .and_then(|mut s| s.query_map([int(now)], read_batch)?.take(max).collect())
        .map_err(sql)?;
    // 2. Due retries become ready.
    let due: Vec<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT id, message FROM scheduled WHERE due <= ?1 ORDER BY due")
        .and_then(|mut s| {
            s.query_map([int(now)], |r| Ok((r.get(0)?, r.get(1)?)))?
                .take(MAX_DUE_PER_LEASE)
                .collect()
        })
        .map_err(sql)?;
    if !due.is_empty() {
        let mut messages = Vec::with_capacity(due.len());
        for (id, blob) in &due {
            tx.prepare_cached("DELETE FROM scheduled WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(sql)?;
            messages.extend(codec::decode_messages(blob)?);
        }
        rebatch(tx, path, &messages)?;
        bump(tx, messages.len() as i64, 0, -(due.len() as i64), 0);
    }
    // 3. The expired batches get their new lease; then ready batches, one
    // job's at a time in turn, each leased as it is taken.
    let mut out = Vec::with_capacity(max);
    for (id, _, payload, sending) in batches {
        let no = take_numbers(tx, 1);
        turns::grant(tx, path, id, no, int(deadline))?;
        out.push(LeasedRow {
            id,
            no,
            payload,
            sending,
        });
    }
    let mut moved = 0i64;
    if out.len() < max {
        let turn = take_numbers(tx, max);
        let taken = turns::take(tx, path, max - out.len(), turn, int(deadline), || {
            take_numbers(tx, 1)
        })?;
        for (no, (id, n, payload, sending)) in taken {
            moved += n;
            out.push(LeasedRow {
                id,
                no,
                payload,
                sending,
            });
        }
    }
    if moved > 0 {
        bump(tx, -moved, moved, 0, 0);
    }
    Ok((deadline, out))
}

/// The message count of a batch whose lease `key` is still held.
fn held(tx: &Tx<'_>, path: &Path, key: (i64, i64)) -> Result<Option<u64>> {
    tx.prepare_cached("SELECT n FROM batches WHERE id = ?1 AND lease = ?2 AND deadline > ?3")
        .and_then(|mut s| {
            s.query_row(params![key.0, key.1, int(now_ms())], |r| r.get(0))
                .optional()
        })
        .map(|n| n.map(uint))
        .map_err(|e| db_error("lease check", path, e))
}

fn mark_in(tx: &Tx<'_>, path: &Path, key: (i64, i64)) -> Result<bool> {
    tx.prepare_cached(
        "UPDATE batches SET sending = 1 WHERE id = ?1 AND lease = ?2 AND deadline > ?3",
    )
    .and_then(|mut s| s.execute(params![key.0, key.1, int(now_ms())]))
    .map(|changed| changed == 1)
    .map_err(|e| db_error("mark_sending", path, e))
}

/// A job's counts, as a settle or a replay reads them.
pub(crate) struct JobCounts {
    pub(crate) no: i64,
    id: JobId,
    records: u64,
    pub(crate) done: bool,
    delivered: u64,
    dead: u64,
    /// `dead` by reason, at [`DeadKind::index`].
    dead_by_kind: [u64; 3],
    invalid: u64,
    duplicate: u64,
    pub(crate) cancelled: u64,
    pub(crate) halted: bool,
    finished: Option<i64>,
}

impl JobCounts {
    pub(crate) fn read(tx: &Tx<'_>, path: &Path, key: JobKey<'_>) -> Result<Option<JobCounts>> {
        const COLUMNS: &str = "no, records, done, delivered, dead, permanent, exhausted, \
                               in_doubt, invalid, duplicate, finished_ms, cancelled, halted, job";
        let map = |r: &rusqlite::Row<'_>| {
            Ok(JobCounts {
                no: r.get(0)?,
                records: uint(r.get(1)?),
                done: r.get(2)?,
                delivered: uint(r.get(3)?),
                dead: uint(r.get(4)?),
                dead_by_kind: [uint(r.get(5)?), uint(r.get(6)?), uint(r.get(7)?)],
                invalid: uint(r.get(8)?),
                duplicate: uint(r.get(9)?),
                finished: r.get(10)?,
                cancelled: uint(r.get(11)?),
                halted: r.get(12)?,
                id: JobId::new(r.get::<_, String>(13)?),
            })
        };
        let row = match key {
            JobKey::Id(job) => tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE job = ?1"))
                .and_then(|mut s| s.query_row([job.as_str()], map).optional()),
            JobKey::No(no) => tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE no = ?1"))
                .and_then(|mut s| s.query_row([no], map).optional()),
        };
        row.map_err(|e| db_error("job", path, e))
    }

    /// Whether the job is fully read and every line accounted for.
    pub(crate) fn finished(&self) -> bool {
        self.done && self.accounted() == self.records
    }

    fn accounted(&self) -> u64 {
        self.delivered + self.dead + self.invalid + self.duplicate + self.cancelled
    }

    /// Stores the delivered, dead (by reason too) and cancelled counts and
    /// the finish time.
    pub(crate) fn write(&self, tx: &Tx<'_>, path: &Path) -> Result<()> {
        let finished = finish(
            self.done,
            self.accounted(),
            self.records,
            self.finished,
            now_ms(),
        );
        tx.prepare_cached(
            "UPDATE jobs SET delivered = ?2, dead = ?3, permanent = ?4, exhausted = ?5, \
             in_doubt = ?6, finished_ms = ?7, cancelled = ?8 WHERE no = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                self.no,
                int(self.delivered),
                int(self.dead),
                int(self.dead_by_kind[DeadKind::Permanent.index()]),
                int(self.dead_by_kind[DeadKind::Exhausted.index()]),
                int(self.dead_by_kind[DeadKind::InDoubt.index()]),
                finished,
                int(self.cancelled)
            ])
        })
        .map(drop)
        .map_err(|e| db_error("job", path, e))
    }
}

#[derive(Clone, Copy)]
pub(crate) enum JobKey<'a> {
    Id(&'a JobId),
    No(i64),
}

fn insert_chunks(tx: &Tx<'_>, path: &Path, no: i64, chunks: &[(u64, Vec<u8>)]) -> Result<()> {
    for (chunk, entries) in chunks {
        tx.prepare_cached("INSERT INTO outcomes (job, chunk, entries) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![no, int(*chunk), entries]))
            .map_err(|e| db_error("outcomes", path, e))?;
    }
    Ok(())
}

fn settle_in(tx: &Tx<'_>, path: &Path, s: &SettleRow, limit: u64) -> Result<()> {
    let sql = |e| db_error("settle", path, e);
    let lost = || Error::LeaseLost {
        lease: s.lease.clone(),
        batch: s.batch.clone(),
    };
    let n = held(tx, path, s.key)?.ok_or_else(lost)?;
    if n != s.n {
        return Err(Error::InvalidCall {
            op: "settle",
            reason: format!(
                "settle of batch {} must name each of its {n} messages exactly once",
                s.batch
            ),
        });
    }
    // Every job is checked before anything is written.
    let mut jobs = Vec::with_capacity(s.groups.len());
    for g in &s.groups {
        let counts = JobCounts::read(tx, path, JobKey::Id(&g.job))?
            .ok_or_else(|| Error::UnknownJob { job: g.job.clone() })?;
        jobs.push(counts);
    }
    delete_batch(tx, path, s.key.0)?;
    let now = int(now_ms());
    let mut dead_total = 0i64;
    for (g, mut counts) in s.groups.iter().zip(jobs) {
        insert_chunks(tx, path, counts.no, &g.chunks)?;
        // The detail of a new dead letter while the job has fewer than
        // `limit` (a replay gives room back); past it the message and kind.
        let mut dead_chunks = Chunks::default();
        for (i, d) in g.dead.iter().enumerate() {
            let keep = counts.dead + (i as u64) < limit;
            let detail = if keep {
                dead_chunks.add(d.line, Entry::Dead(&d.reason));
                d.reason.detail.as_str()
            } else {
                dead_chunks.add(d.line, Entry::DeadNotKept(d.reason.kind));
                DETAIL_NOT_KEPT
            };
            tx.prepare_cached(
                "INSERT INTO dead (job, message, kind, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    counts.no,
                    &d.message,
                    dead_kind_code(d.reason.kind),
                    detail,
                    now
                ])
            })
            .map_err(sql)?;
        }
        insert_chunks(tx, path, counts.no, &dead_chunks.into_blobs())?;
        dead_total += g.dead.len() as i64;
        counts.delivered += g.delivered;
        counts.dead += g.dead.len() as u64;
        for (count, added) in counts.dead_by_kind.iter_mut().zip(g.dead_by_kind) {
            *count += added;
        }
        counts.write(tx, path)?;
    }
    // A cancelled job's retries are counted as cancelled, not scheduled.
    let mut scheduled = 0i64;
    let mut job: Option<JobCounts> = None;
    for (id, due, message) in &s.retries {
        if job.as_ref().is_none_or(|j| j.id != *id) {
            if let Some(done) = job.take().filter(|j| j.halted) {
                done.write(tx, path)?;
            }
            job = JobCounts::read(tx, path, JobKey::Id(id))?;
        }
        match &mut job {
            Some(counts) if counts.halted => counts.cancelled += 1,
            _ => {
                tx.prepare_cached("INSERT INTO scheduled (due, message, job) VALUES (?1, ?2, ?3)")
                    .and_then(|mut st| {
                        st.execute(params![int(*due), message, job.as_ref().map(|j| j.no)])
                    })
                    .map_err(sql)?;
                scheduled += 1;
            }
        }
    }
    if let Some(done) = job.filter(|j| j.halted) {
        done.write(tx, path)?;
    }
    bump(tx, 0, -int(s.n), scheduled, dead_total);
    Ok(())
}

impl SqliteBackend {
    fn leases(deadline: u64, rows: Vec<LeasedRow>) -> Result<Vec<Lease>> {
        rows.into_iter()
            .map(|row| {
                let batch = BatchId::new(row.id.to_string());
                Ok(Lease {
                    id: LeaseId::new(format!("{batch}#{}", row.no)),
                    batch: Batch {
                        id: batch,
                        messages: codec::decode_messages(&row.payload)?,
                    },
                    deadline_ms: deadline,
                    previously_sending: row.sending,
                })
            })
            .collect()
    }
}

// Queue and offsets are tables of one database, written in one transaction.
impl wds_core::backend::Backend for SqliteBackend {}

#[async_trait]
impl Queue for SqliteBackend {
    async fn push(&self, push: &Push) -> Result<Pushed> {
        let row = PushRow::new(push);
        let limit = self.detail_limit;
        self.write("push", move |tx, path| {
            match push_in(tx, path, &row, limit)? {
                PushOutcome::Done(pushed) => Ok(pushed),
                PushOutcome::Refused(e) => Err(e),
            }
        })
        .await
    }

    async fn push_all(&self, pushes: &[Push]) -> Result<Vec<Pushed>> {
        let rows: Vec<PushRow> = pushes.iter().map(PushRow::new).collect();
        let limit = self.detail_limit;
        let (done, refused) = self
            .write("push_all", move |tx, path| {
                let mut done = Vec::with_capacity(rows.len());
                for row in &rows {
                    match push_in(tx, path, row, limit)? {
                        PushOutcome::Done(pushed) => done.push(pushed),
                        // The pushes before it stay applied: they commit.
                        PushOutcome::Refused(e) => return Ok((done, Some(e))),
                    }
                }
                Ok((done, None))
            })
            .await?;
        match refused {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>> {
        if max_batches == 0 {
            return Ok(Vec::new());
        }
        let (deadline, rows) = self
            .write("lease", move |tx, path| {
                lease_in(tx, path, max_batches, ttl)
            })
            .await?;
        Self::leases(deadline, rows)
    }

    async fn mark_sending(&self, lease: &Lease) -> Result<()> {
        let key = lease_key(lease).ok_or_else(|| lost(lease))?;
        let held = self
            .write("mark_sending", move |tx, path| mark_in(tx, path, key))
            .await?;
        if held {
            Ok(())
        } else {
            Err(lost(lease))
        }
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64> {
        let key = lease_key(lease).ok_or_else(|| lost(lease))?;
        let extended = self
            .write("extend", move |tx, path| {
                let now = now_ms();
                let deadline = now + ttl.as_millis() as u64;
                tx.prepare_cached(
                    "UPDATE batches SET deadline = ?4 WHERE id = ?1 AND lease = ?2 AND deadline > ?3",
                )
                .and_then(|mut s| s.execute(params![key.0, key.1, int(now), int(deadline)]))
                .map(|changed| (changed == 1).then_some(deadline))
                .map_err(|e| db_error("extend", path, e))
            })
            .await?;
        extended.ok_or_else(|| lost(lease))
    }

    async fn settle(&self, lease: &Lease, outcomes: &[Settle]) -> Result<()> {
        let row = SettleRow::new(lease, outcomes)?;
        let limit = self.detail_limit;
        self.write("settle", move |tx, path| settle_in(tx, path, &row, limit))
            .await
    }

    async fn settle_and_continue(
        &self,
        lease: &Lease,
        outcomes: &[Settle],
        then: Continue<'_>,
    ) -> Result<Continued> {
        let row = SettleRow::new(lease, outcomes);
        let mark = then.mark.map(|m| (lease_key(m), lost(m)));
        let (max, ttl) = (then.lease, then.ttl);
        let limit = self.detail_limit;
        let (settled, marked, leased) = self
            .write("settle_and_continue", move |tx, path| {
                // A storage failure aborts the whole call (nothing applied);
                // a broken rule fails only its part, which wrote nothing.
                let settled = match row {
                    Ok(row) => match settle_in(tx, path, &row, limit) {
                        Err(e) if is_storage(&e) => return Err(e),
                        settled => settled,
                    },
                    Err(e) => Err(e),
                };
                let marked = match mark {
                    Some((Some(key), lost)) => Some(if mark_in(tx, path, key)? {
                        Ok(())
                    } else {
                        Err(lost)
                    }),
                    Some((None, lost)) => Some(Err(lost)),
                    None => None,
                };
                let leased = if max == 0 {
                    (0, Vec::new())
                } else {
                    lease_in(tx, path, max, ttl)?
                };
                Ok((settled, marked, leased))
            })
            .await?;
        Ok(Continued {
            settled,
            marked,
            leased: Self::leases(leased.0, leased.1),
        })
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let key = lease_key(lease).ok_or_else(|| lost(lease))?;
        let released = self
            .write("release", move |tx, path| {
                let Some(n) = held(tx, path, key)? else {
                    return Ok(false);
                };
                let sql = |e| db_error("release", path, e);
                let job: Option<i64> = tx
                    .prepare_cached("SELECT job FROM batches WHERE id = ?1")
                    .and_then(|mut s| s.query_row([key.0], |r| r.get(0)))
                    .map_err(sql)?;
                let counts = match job {
                    Some(no) => JobCounts::read(tx, path, JobKey::No(no))?,
                    None => None,
                };
                if let Some(mut counts) = counts.filter(|c| c.halted) {
                    // A cancelled job's batch is not queued again.
                    delete_batch(tx, path, key.0)?;
                    counts.cancelled += n;
                    counts.write(tx, path)?;
                    bump(tx, 0, -int(n), 0, 0);
                    return Ok(true);
                }
                // First among its job's ready batches (leases take a job's
                // in `pos` order), and its job first in turn.
                tx.prepare_cached(
                    "UPDATE batches SET lease = NULL, deadline = NULL, \
                     pos = (SELECT coalesce(min(pos), 0) - 1 FROM batches \
                            WHERE job IS ?2 AND pos IS NOT NULL) \
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![key.0, job]))
                .map_err(sql)?;
                if let Some(no) = job {
                    turns::first(tx, path, no)?;
                }
                bump(tx, int(n), -int(n), 0, 0);
                Ok(true)
            })
            .await?;
        if released {
            Ok(())
        } else {
            Err(lost(lease))
        }
    }

    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>> {
        let job = job.cloned();
        let rows: Vec<(Vec<u8>, i64, String, i64)> = self
            .read("dead_letters", move |tx, path| {
                let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
                match &job {
                    Some(job) => tx
                        .prepare_cached(
                            "SELECT message, kind, detail, at_ms FROM dead \
                             WHERE job = (SELECT no FROM jobs WHERE job = ?1) ORDER BY id",
                        )
                        .and_then(|mut s| s.query_map([job.as_str()], map)?.take(limit).collect()),
                    None => tx
                        .prepare_cached("SELECT message, kind, detail, at_ms FROM dead ORDER BY id")
                        .and_then(|mut s| s.query_map([], map)?.take(limit).collect()),
                }
                .map_err(|e| db_error("dead_letters", path, e))
            })
            .await?;
        rows.into_iter()
            .map(|(message, kind, detail, at_ms)| {
                let message =
                    codec::decode_messages(&message)?
                        .pop()
                        .ok_or_else(|| Error::Corrupt {
                            key: "dead.message".into(),
                            detail: "no message".into(),
                        })?;
                Ok(DeadLetter {
                    message,
                    reason: DeadReason {
                        kind: dead_kind(kind)?,
                        detail,
                    },
                    at_ms: uint(at_ms),
                })
            })
            .collect()
    }

    async fn replay(&self, job: Option<&JobId>) -> Result<u64> {
        let job = job.cloned();
        self.write("replay", move |tx, path| {
            replay_in(tx, path, job.as_ref(), None)
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.read("stats", |tx, _| {
            let c = tx.counters.get();
            Ok(QueueStats {
                ready: uint(c.ready),
                leased: uint(c.leased),
                scheduled: uint(c.scheduled),
                dead: uint(c.dead),
            })
        })
        .await
    }
}
