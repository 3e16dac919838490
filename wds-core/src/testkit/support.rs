//! What the checks share: a stand-in batcher, message and settle builders,
//! snapshots for "changes nothing", and clock helpers.

use std::fmt::Debug;
use std::time::Duration;

use crate::{
    backend::{
        now_ms, Checkpoint, Lease, LineOutcome, OffsetStore, Push, Queue, QueueStats, Receipt,
        Reject, RejectKind, Settle,
    },
    DeadKind, DeadLetter, DeadReason, Error, Format, JobId, JobMeta, JobReport, Message, MessageId,
    Result,
};

/// A lease ttl no check outlives.
pub(super) const LONG: Duration = Duration::from_secs(60);
/// A lease ttl meant to expire during a check, with nothing to do before.
pub(super) const SHORT: Duration = Duration::from_millis(200);
/// A lease ttl meant to expire, whose holder has one call to make first.
/// Generous, so that a loaded machine still makes that call in time.
pub(super) const BRIEF: Duration = Duration::from_millis(500);
/// How long to keep asking for something that must happen.
pub(super) const PATIENCE: Duration = Duration::from_secs(5);
/// How far the backend's clock may be from ours (it may use its own, e.g.
/// Redis `TIME`). Only used to avoid false alarms, never to excuse a
/// violation of more than this.
pub(super) const SKEW_MS: u64 = 50;

/// A unique identity, so that checks never share a job even on a backend
/// that outlives the test run.
pub(super) fn identity(check: &str, n: u32) -> String {
    format!("wds-testkit/{check}/{n}/{:016x}", fastrand::u64(..))
}

/// Job metadata named `name`.
pub(super) fn meta(name: &str) -> JobMeta {
    JobMeta {
        name: name.to_string(),
        file: None,
        format: Format::Csv,
        default_message: None,
        created_ms: now_ms(),
    }
}

/// Claims a new job for `check` and asserts the claim is fresh.
pub(super) async fn claim(s: &dyn OffsetStore, check: &str, n: u32) -> JobId {
    let identity = identity(check, n);
    let claim = ok(
        &format!("claim({identity:?})"),
        s.claim(&identity, meta(&format!("{check}-{n}.csv"))).await,
    );
    assert!(
        claim.fresh,
        "the first claim of the new identity {identity:?} must be fresh"
    );
    claim.job
}

/// The message of `line` of `job`, as the batcher makes it.
pub(super) fn message(job: &JobId, line: u64) -> Message {
    Message::fresh(
        job,
        line,
        format!("user-{line}"),
        format!("alert for line {line}"),
    )
}

/// The id of `line` of `job`.
pub(super) fn line_id(job: &JobId, line: u64) -> MessageId {
    MessageId {
        job: job.clone(),
        line,
    }
}

/// A stand-in for the batcher: consecutive pushes for one job, one record
/// per line, ten bytes per line.
#[derive(Debug)]
pub(super) struct Reader {
    job: JobId,
    at: Checkpoint,
}

impl Reader {
    /// A reader at the start of `job`'s input.
    pub(super) fn new(job: &JobId) -> Self {
        Reader {
            job: job.clone(),
            at: Checkpoint {
                seq: 0,
                byte: 0,
                line: 1,
                records: 0,
                done: false,
            },
        }
    }

    /// The next push: `messages` valid lines, then `invalid` invalid lines,
    /// then `duplicate` repeats of line 1, then the checkpoint after them.
    pub(super) fn next(&mut self, messages: u64, invalid: u64, duplicate: u64, done: bool) -> Push {
        let mut line = self.at.line;
        let mut batch = Vec::new();
        for _ in 0..messages {
            batch.push(message(&self.job, line));
            line += 1;
        }
        let mut rejects = Vec::new();
        for _ in 0..invalid {
            rejects.push(Reject {
                line,
                kind: RejectKind::Invalid {
                    reason: format!("line {line}: missing userId"),
                },
            });
            line += 1;
        }
        for _ in 0..duplicate {
            rejects.push(Reject {
                line,
                kind: RejectKind::Duplicate { of_line: 1 },
            });
            line += 1;
        }
        let consumed = messages + invalid + duplicate;
        self.at = Checkpoint {
            seq: self.at.seq + 1,
            byte: self.at.byte + 10 * consumed,
            line,
            records: self.at.records + consumed,
            done,
        };
        Push {
            job: self.job.clone(),
            messages: batch,
            rejects,
            next: self.at,
        }
    }
}

/// A receipt as a sink would give it.
pub(super) fn receipt() -> Receipt {
    Receipt {
        status: Some(200),
        attempt: 1,
        latency_ms: 12,
        at_ms: now_ms(),
    }
}

/// `message` delivered.
pub(super) fn delivered(message: &Message) -> Settle {
    Settle::Delivered {
        id: message.id.clone(),
        receipt: receipt(),
    }
}

/// `message` dead for `kind`.
pub(super) fn dead(message: &Message, kind: DeadKind) -> Settle {
    Settle::Dead {
        message: message.clone(),
        reason: DeadReason {
            kind,
            detail: format!("testkit: {} for line {}", kind.as_str(), message.id.line),
        },
    }
}

/// Every message of `lease` delivered: the outcomes of a batch that went
/// well, for a backend's own tests too.
pub fn all_delivered(lease: &Lease) -> Vec<Settle> {
    lease.batch.messages.iter().map(delivered).collect()
}

/// The value of a call that must succeed.
#[track_caller]
pub(super) fn ok<T>(what: &str, result: Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what} failed: {e} ({e:?})"),
    }
}

/// Asserts a call was refused with [`Error::LeaseLost`].
#[track_caller]
pub(super) fn assert_lease_lost<T: Debug>(what: &str, result: Result<T>) {
    match result {
        Err(Error::LeaseLost { .. }) => {}
        other => panic!("{what} must fail with Error::LeaseLost, got {other:?}"),
    }
}

/// Asserts a call was refused with [`Error::UnknownJob`].
#[track_caller]
pub(super) fn assert_unknown_job<T: Debug>(what: &str, result: Result<T>) {
    match result {
        Err(Error::UnknownJob { .. }) => {}
        other => panic!("{what} must fail with Error::UnknownJob, got {other:?}"),
    }
}

/// The report of a claimed job.
pub(super) async fn report(s: &dyn OffsetStore, job: &JobId) -> JobReport {
    let report = match ok(&format!("report({job})"), s.report(job).await) {
        Some(report) => report,
        None => panic!("report({job}) must answer Some for a claimed job, got None"),
    };
    assert_eq!(
        report.permanent + report.exhausted + report.in_doubt,
        report.dead,
        "report({job}): every dead letter must be counted under its reason, \
         permanent + exhausted + in_doubt == dead: {report:?}"
    );
    report
}

/// A job's dead letters by reason: `(permanent, exhausted, in_doubt)`.
pub(super) fn dead_by_reason(report: &JobReport) -> (u64, u64, u64) {
    (report.permanent, report.exhausted, report.in_doubt)
}

/// The queue's counts.
pub(super) async fn stats(q: &dyn Queue) -> QueueStats {
    ok("stats()", q.stats().await)
}

/// Asserts the queue's counts.
#[track_caller]
pub(super) fn assert_stats(
    actual: QueueStats,
    (ready, leased, scheduled, dead): (u64, u64, u64, u64),
    when: &str,
) {
    let expected = QueueStats {
        ready,
        leased,
        scheduled,
        dead,
    };
    assert_eq!(actual, expected, "stats() {when}");
}

/// The outcome of one line.
pub(super) async fn outcome(s: &dyn OffsetStore, id: &MessageId) -> Option<LineOutcome> {
    ok(&format!("outcome({id})"), s.outcome(id).await)
}

/// A job's counts, without `enqueued` (which replays may or may not touch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Counts {
    /// Records read.
    pub(super) lines: u64,
    /// Delivered.
    pub(super) delivered: u64,
    /// Dead, in-doubt included.
    pub(super) dead: u64,
    /// Dead in doubt.
    pub(super) in_doubt: u64,
    /// Invalid.
    pub(super) invalid: u64,
    /// Duplicate.
    pub(super) duplicate: u64,
}

impl Counts {
    /// The counts of `report`.
    pub(super) fn of(report: &JobReport) -> Self {
        Counts {
            lines: report.lines,
            delivered: report.delivered,
            dead: report.dead,
            in_doubt: report.in_doubt,
            invalid: report.invalid,
            duplicate: report.duplicate,
        }
    }
}

/// Leases until something comes back or `PATIENCE` runs out; returns what came.
pub(super) async fn lease_soon(q: &dyn Queue, max: usize, ttl: Duration) -> Vec<Lease> {
    let give_up = now_ms() + PATIENCE.as_millis() as u64;
    loop {
        let leases = ok(&format!("lease({max}, {ttl:?})"), q.lease(max, ttl).await);
        if !leases.is_empty() || now_ms() > give_up {
            return leases;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Leases exactly one batch, which must be ready now.
#[track_caller]
pub(super) fn one(leases: Vec<Lease>, what: &str) -> Lease {
    let n = leases.len();
    let mut leases = leases.into_iter();
    match (leases.next(), n) {
        (Some(lease), 1) => lease,
        _ => panic!("{what}: expected exactly one leased batch, got {n}"),
    }
}

/// Sleeps until our clock is `margin_ms` past `deadline_ms`.
pub(super) async fn sleep_past(deadline_ms: u64, margin_ms: u64) {
    let target = deadline_ms + margin_ms;
    loop {
        let now = now_ms();
        if now > target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(target - now + 1)).await;
    }
}

/// Asserts `lease.deadline_ms` is `ttl` after the call, in [`now_ms`] time.
#[track_caller]
pub(super) fn assert_deadline(lease: &Lease, ttl: Duration, before_ms: u64, after_ms: u64) {
    let ttl = ttl.as_millis() as u64;
    let (low, high) = (before_ms + ttl, after_ms + ttl);
    assert!(
        lease.deadline_ms + SKEW_MS >= low && lease.deadline_ms <= high + SKEW_MS,
        "Lease::deadline_ms must be the lease time plus the ttl in now_ms() time \
         (milliseconds since the Unix epoch): expected {low}..={high}, got {}",
        lease.deadline_ms
    );
}

/// Everything a failed call could have touched, to show it touched nothing.
#[derive(Debug, PartialEq)]
pub(super) struct Snapshot {
    stats: QueueStats,
    report: Option<JobReport>,
    checkpoint: Option<Checkpoint>,
    rejects: Option<Vec<Reject>>,
    outcomes: Vec<(u64, Option<LineOutcome>)>,
    dead_letters: Vec<DeadLetter>,
}

impl Snapshot {
    /// What the backend says about `job` (claimed or not) and the queue now.
    pub(super) async fn take(q: &dyn Queue, s: &dyn OffsetStore, job: &JobId) -> Self {
        let report = ok("report()", s.report(job).await);
        let mut outcomes = Vec::new();
        if let Some(report) = &report {
            for line in 1..=report.lines + 1 {
                outcomes.push((line, outcome(s, &line_id(job, line)).await));
            }
        }
        let claimed = report.is_some();
        Snapshot {
            stats: stats(q).await,
            checkpoint: if claimed {
                Some(ok("checkpoint()", s.checkpoint(job).await))
            } else {
                None
            },
            rejects: if claimed {
                Some(ok("rejects()", s.rejects(job, 1_000).await))
            } else {
                None
            },
            report,
            outcomes,
            dead_letters: ok("dead_letters(None)", q.dead_letters(None, 1_000).await),
        }
    }

    /// Asserts nothing changed since `self`.
    pub(super) async fn assert_unchanged(
        &self,
        q: &dyn Queue,
        s: &dyn OffsetStore,
        job: &JobId,
        what: &str,
    ) {
        let now = Snapshot::take(q, s, job).await;
        assert_eq!(
            &now, self,
            "{what} must change nothing (left: after, right: before)"
        );
    }
}

/// Asserts `leases`, in order, carry exactly the messages of `pushes`, one
/// batch per push.
#[track_caller]
pub(super) fn assert_batches(leases: &[Lease], pushes: &[&Push], what: &str) {
    let got: Vec<&[Message]> = leases.iter().map(|l| l.batch.messages.as_slice()).collect();
    let want: Vec<&[Message]> = pushes.iter().map(|p| p.messages.as_slice()).collect();
    assert_eq!(
        got, want,
        "{what}: each push must become one batch holding its messages, leased in push order"
    );
}

/// Leases everything ready now (a backend may lease fewer batches than
/// asked per call, so call until nothing comes).
pub(super) async fn lease_all(q: &dyn Queue, ttl: Duration) -> Vec<Lease> {
    let mut all = Vec::new();
    for _ in 0..100 {
        let leases = ok("lease(100)", q.lease(100, ttl).await);
        if leases.is_empty() {
            break;
        }
        all.extend(leases);
    }
    all
}
