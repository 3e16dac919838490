//! The [`JobControl`] trait: an operator's hands on a running job.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::model::{DeadKind, JobId, JobReport};

/// Pause, resume and cancel a job, and replay its dead letters of one kind.
///
/// A `JobControl` MUST be a view of the same backend as the
/// [`crate::backend::Queue`] and [`crate::backend::OffsetStore`] it is used with: each call
/// changes the job's queue and its report in one atomic step.
///
/// # Contract
///
/// - [`pause`](JobControl::pause) MUST keep every ready (and, once due,
///   every retried) batch of the job from being leased until
///   [`resume`](JobControl::resume); batches leased before it finish as
///   usual (settle, retry, release all work). The job's report says
///   [`JobState::Paused`](crate::JobState::Paused) while it is not done.
///   Reading goes on. Pausing a paused job changes nothing.
/// - [`resume`](JobControl::resume) MUST make the job's ready batches
///   leasable again; resuming a job that is not paused changes nothing.
/// - [`cancel`](JobControl::cancel) MUST, atomically: end the job's reading
///   as [`OffsetStore::fail`](crate::backend::OffsetStore::fail) does (the checkpoint
///   `done`, its `seq` raised by one, so the batcher's next push is refused
///   as stale and it stops reading; `lines` stays what was read), remove
///   the job's ready batches and scheduled retries and count their messages
///   in [`JobReport::cancelled`], and clear a pause. Batches leased at the
///   time finish as usual, except that a `Retry` settle, a release or a
///   later due retry of the job counts its messages as cancelled instead
///   of queueing them. From then on the report says
///   [`JobState::Cancelled`](crate::JobState::Cancelled), and
///   `delivered + dead + invalid + duplicate + cancelled == lines` once the
///   leased batches are settled. Nothing marked as sending is ever re-sent
///   because of a cancel (guarantee G1). Dead letters of a cancelled job
///   stay dead: [`crate::backend::Queue::replay`] and
///   [`replay_kind`](JobControl::replay_kind) leave them. Cancelling a
///   cancelled job changes nothing.
/// - Each of `pause`, `resume` and `cancel` MUST fail with
///   [`Error::IllegalTransition`] (changing nothing) when the job is
///   finished (fully read and every line accounted for), and `pause` and
///   `resume` also when it is cancelled; see [`Action::check`].
/// - [`replay_kind`](JobControl::replay_kind) MUST do what
///   [`crate::backend::Queue::replay`] does for the job's dead letters of that kind
///   only, leaving the others dead.
/// - Fair scheduling, which this trait relies on: [`crate::backend::Queue::lease`]
///   takes ready batches round-robin across the jobs that have some (one
///   batch of each job in turn, each job's batches in push order), so a
///   small job is not queued behind a large one.
///
/// # Errors
///
/// [`Error::UnknownJob`] for a job never claimed; [`Error::IllegalTransition`]
/// as above; transient backend failures are [`Error::Unavailable`].
///
/// # Cancel safety
///
/// Each method is atomic: a dropped call either applied or did not.
#[async_trait]
pub trait JobControl: Send + Sync + Debug + 'static {
    /// Applies `action` (pause, resume or cancel) to the job; returns the
    /// report after it.
    async fn act(&self, job: &JobId, action: Action) -> Result<JobReport>;

    /// Replays the job's dead letters of one kind; returns how many.
    async fn replay_kind(&self, job: &JobId, kind: DeadKind) -> Result<u64>;

    /// Stops leasing the job's batches; returns the report after it.
    async fn pause(&self, job: &JobId) -> Result<JobReport> {
        self.act(job, Action::Pause).await
    }

    /// Leases the job's batches again; returns the report after it.
    async fn resume(&self, job: &JobId) -> Result<JobReport> {
        self.act(job, Action::Resume).await
    }

    /// Stops the job for good; returns the report after it.
    async fn cancel(&self, job: &JobId) -> Result<JobReport> {
        self.act(job, Action::Cancel).await
    }
}

#[async_trait]
impl<T: JobControl + ?Sized> JobControl for Arc<T> {
    async fn act(&self, job: &JobId, action: Action) -> Result<JobReport> {
        (**self).act(job, action).await
    }
    async fn replay_kind(&self, job: &JobId, kind: DeadKind) -> Result<u64> {
        (**self).replay_kind(job, kind).await
    }
}

/// An operator's action on a job, as [`JobControl`] applies it.
///
/// Exhaustive on purpose: every [`JobControl`] must apply every action, so
/// a new one is a breaking change of the backend protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// [`JobControl::pause`].
    Pause,
    /// [`JobControl::resume`].
    Resume,
    /// [`JobControl::cancel`].
    Cancel,
}

impl Action {
    /// The action's name, as in errors and routes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
        }
    }

    /// Whether the action applies to a job that is `cancelled` or
    /// `finished` (fully read and every line accounted for): `Ok(true)` when
    /// it changes something, `Ok(false)` when it changes nothing (cancel of a
    /// cancelled job), the error the [contract](JobControl#contract) asks
    /// for otherwise. Backends call it inside their atomic step.
    ///
    /// # Errors
    ///
    /// [`Error::IllegalTransition`].
    pub fn check(self, job: &JobId, cancelled: bool, finished: bool) -> Result<bool> {
        let refuse = |state| {
            Err(Error::IllegalTransition {
                job: job.clone(),
                action: self.as_str(),
                state,
            })
        };
        match (self, cancelled, finished) {
            (Action::Cancel, true, _) => Ok(false),
            (_, true, _) => refuse("cancelled"),
            (_, false, true) => refuse("finished"),
            _ => Ok(true),
        }
    }
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn JobControl>) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let j = JobId::new("j");
        assert!(Action::Pause.check(&j, false, false).unwrap());
        assert!(!Action::Cancel.check(&j, true, true).unwrap());
        assert!(matches!(
            Action::Resume.check(&j, true, false),
            Err(Error::IllegalTransition {
                state: "cancelled",
                ..
            })
        ));
        assert!(matches!(
            Action::Cancel.check(&j, false, true),
            Err(Error::IllegalTransition {
                state: "finished",
                ..
            })
        ));
    }
}
