//! The [`OffsetStore`] trait: what each job has done.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{Checkpoint, Claim, JobId, JobMeta, JobReport, LineOutcome, MessageId, Reject};

/// How many rejects, and how many dead letters, of a job a backend keeps in
/// detail unless configured otherwise (see [Bounded detail](OffsetStore#bounded-detail)).
pub const DEFAULT_DETAIL_LIMIT: usize = 1_000;

/// The reason or detail of a rejected or dead line that was not kept in
/// detail (see [Bounded detail](OffsetStore#bounded-detail)).
pub const DETAIL_NOT_KEPT: &str =
    "detail not kept: beyond the first lines of this job kept in detail";

/// What each job has done: claimed inputs, read checkpoints, counters and
/// the outcome of every line.
///
/// It is written through [`crate::backend::Queue::push`] and [`crate::backend::Queue::settle`]
/// (which update it atomically with the queue) and by [`OffsetStore::claim`].
///
/// # Contract
///
/// - [`claim`](OffsetStore::claim) MUST create the job for an identity at most
///   once, across all processes: of any number of concurrent claims of one
///   identity exactly one returns `fresh: true`, and all return the same job id
///   and the metadata of the first claim.
/// - [`checkpoint`](OffsetStore::checkpoint) MUST return the checkpoint stored
///   by the last applied push (the default checkpoint before any).
/// - [`report`](OffsetStore::report) MUST reflect every applied push and
///   settle; its state is `Reading` until a push with `done` is applied, then
///   `Delivering`, then `Done` once `delivered + dead + invalid + duplicate ==
///   lines`. A replay of dead letters moves a `Done` job back to `Delivering`.
/// - [`outcome`](OffsetStore::outcome) MUST return the terminal state of a line
///   once it has one, and `None` while it is pending.
/// - Per-job storage MUST be bounded (see [Bounded detail](#bounded-detail)).
/// - [`fail`](OffsetStore::fail) MUST, atomically: set the checkpoint's `done`
///   and raise its `seq` by one (so a push still carrying the old `seq` is
///   refused as stale and nobody resumes reading), keep `records` (the job's
///   `lines`) and every count, and store the reason. From then on `report`
///   MUST answer [`JobState::Failed`](crate::JobState::Failed) with that
///   reason in [`JobReport::failure`] (never `Reading`, `Delivering` or
///   `Done`, a replay included), keep counting settles, and set
///   `finished_ms` once `delivered + dead + invalid + duplicate == lines`
///   (at once if already so). A second `fail` of a failed job MUST change
///   nothing (the first reason stays) and succeed. Failing a job whose
///   checkpoint is already `done` (fully read) MUST change nothing and
///   succeed: it is finished, not failed.
///
/// # Bounded detail
///
/// A job's storage MUST NOT grow with the size of the reasons its lines were
/// refused for: a backend keeps a job's first *N* rejects in detail (N is a
/// backend setting, [`DEFAULT_DETAIL_LIMIT`] unless configured) and, while
/// the job has fewer than *N* dead letters at the time, each new dead
/// letter's [`DeadReason::detail`](crate::DeadReason::detail). Past that:
///
/// - every count stays exact, and every dead letter keeps its whole message
///   (it replays as any other);
/// - [`rejects`](OffsetStore::rejects) returns only the rejects kept in detail;
/// - [`outcome`](OffsetStore::outcome) of a rejected line not kept in detail is
///   `Invalid { reason: DETAIL_NOT_KEPT }` or `Duplicate { of_line: 0 }`; a
///   dead letter not kept in detail has the detail [`DETAIL_NOT_KEPT`], in
///   [`crate::backend::Queue::dead_letters`] and in its line's outcome alike;
/// - a delivered line always keeps its whole receipt, and a replayed line is
///   pending (`None`) again.
///
/// A line SHOULD cost a few bytes (a file of invalid lines well under ten
/// bytes a line).
///
/// # Errors
///
/// Transient backend failures are [`crate::Error::Unavailable`]; asking about a
/// job that was never claimed is [`crate::Error::UnknownJob`] (except for
/// `report`, which answers `None`).
///
/// # Cancel safety
///
/// Each method is atomic; a dropped `claim` either claimed or did not.
#[async_trait]
pub trait OffsetStore: Send + Sync + Debug + 'static {
    /// Claims the job for an input identity, creating it if it is new.
    async fn claim(&self, identity: &str, meta: JobMeta) -> Result<Claim>;

    /// The job's read checkpoint.
    async fn checkpoint(&self, job: &JobId) -> Result<Checkpoint>;

    /// The job's progress and counts, or `None` for an unknown job.
    async fn report(&self, job: &JobId) -> Result<Option<JobReport>>;

    /// Every job's report, newest first.
    async fn reports(&self) -> Result<Vec<JobReport>>;

    /// The terminal state of one line, if it has one.
    async fn outcome(&self, id: &MessageId) -> Result<Option<LineOutcome>>;

    /// Up to `limit` rejected lines of a job (invalid and duplicate), by line.
    async fn rejects(&self, job: &JobId, limit: usize) -> Result<Vec<Reject>>;

    /// Ends the reading of a job that is not fully read, for good, as
    /// [`JobState::Failed`](crate::JobState::Failed) with `reason` (its input
    /// changed or vanished while being read). Returns the report after it.
    ///
    /// # Errors
    ///
    /// [`crate::Error::UnknownJob`] for a job never claimed; transient
    /// backend failures as for every method.
    async fn fail(&self, job: &JobId, reason: &str) -> Result<JobReport>;
}

#[async_trait]
impl<T: OffsetStore + ?Sized> OffsetStore for Arc<T> {
    async fn claim(&self, identity: &str, meta: JobMeta) -> Result<Claim> {
        (**self).claim(identity, meta).await
    }
    async fn checkpoint(&self, job: &JobId) -> Result<Checkpoint> {
        (**self).checkpoint(job).await
    }
    async fn report(&self, job: &JobId) -> Result<Option<JobReport>> {
        (**self).report(job).await
    }
    async fn reports(&self) -> Result<Vec<JobReport>> {
        (**self).reports().await
    }
    async fn outcome(&self, id: &MessageId) -> Result<Option<LineOutcome>> {
        (**self).outcome(id).await
    }
    async fn rejects(&self, job: &JobId, limit: usize) -> Result<Vec<Reject>> {
        (**self).rejects(job, limit).await
    }
    async fn fail(&self, job: &JobId, reason: &str) -> Result<JobReport> {
        (**self).fail(job, reason).await
    }
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn OffsetStore>) {}
