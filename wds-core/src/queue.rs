//! The [`Queue`] trait: ready messages, leased to workers in batches.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{DeadLetter, JobId, Lease, Push, Pushed, QueueStats, Settle};

/// Ready messages, leased to workers in batches, acked, retried, dead-lettered.
///
/// Every operation works on a whole batch, so a networked backend needs a
/// constant number of round trips per batch, not per message.
///
/// A `Queue` and the [`crate::backend::OffsetStore`] it is used with MUST be views of the
/// same backend: [`Queue::push`] and [`Queue::settle`] update the job's
/// checkpoint and counters in the same atomic step as the queue itself.
///
/// # Contract
///
/// - [`push`](Queue::push) MUST apply the push only when the job's checkpoint
///   `seq` equals [`Push::seq`]; it then appends the messages, records the
///   rejects, stores `next` as the checkpoint and counts the records, all
///   atomically. A push whose `seq` is below the current one MUST change
///   nothing and return `applied: false` (an idempotent re-push after a crash);
///   one above it MUST fail with [`crate::Error::Conflict`].
/// - [`push_all`](Queue::push_all) MUST have the effect of `push` of each
///   push in order, stopping at the first that fails (the ones before it
///   stay applied), and MUST report at least the first push unless it fails. A networked backend SHOULD apply them in one round trip:
///   it is how a batcher that is ahead of the backend catches up.
/// - [`lease`](Queue::lease) MUST hand each batch to at most one holder at a
///   time. It MUST first re-lease batches whose lease expired (with
///   [`Lease::previously_sending`] set when the expired holder had called
///   [`mark_sending`](Queue::mark_sending)), then move due retries to ready,
///   then lease ready batches round-robin across jobs: one batch of each job
///   that has some ready in turn, each job's batches in push order, skipping
///   [paused](crate::backend::JobControl::pause) jobs (fair scheduling: a small job is
///   not queued behind a large one). A batch MUST hold one job's messages
///   (retries and replays are batched per job). A lease expires at
///   `deadline_ms`, after which its id MUST NOT be accepted by any method.
/// - [`settle`](Queue::settle) MUST be given every message of the leased batch
///   exactly once, MUST apply all of it atomically, and MUST fail with
///   [`crate::Error::LeaseLost`] (changing nothing) when the lease is not held.
///   Outcomes that do not name each message exactly once SHOULD fail with
///   [`crate::Error::InvalidCall`], changing nothing
///   ([`crate::backend::Settle::check_covers`] does the check).
///   `Delivered` and `Dead` are terminal and counted in the job's report;
///   `Retry` makes the message leasable again no earlier than its `at_ms`.
/// - [`settle_and_continue`](Queue::settle_and_continue) MUST have the
///   effect of `settle(lease, ..)`, then `mark_sending` of [`Continue::mark`],
///   then `lease` of [`Continue::lease`] batches, each part succeeding or
///   failing as that call would, and each tried whatever came of the parts
///   before. The next batch MUST NOT be marked while `lease` is still held
///   unsettled, so a worker's count of batches on the wire never grows. A
///   networked backend SHOULD apply all of it in one atomic step: it is how
///   a worker ends one batch, hands its sending slot to another and fetches
///   its next in one round trip.
/// - [`release`](Queue::release) returns an unsent batch to the front of the
///   ready queue at once, as if it had never been leased.
/// - [`replay`](Queue::replay) moves dead letters back to ready with their
///   `attempts` reset to 0 and `first_attempt_ms` cleared (so the retry age
///   limit starts again), and takes them out of the `dead` counts.
///
/// # Errors
///
/// Transient backend failures are [`crate::Error::Unavailable`]
/// (retryable). [`crate::Error::LeaseLost`] and [`crate::Error::Conflict`] are
/// final for that call.
///
/// # Cancel safety
///
/// Each method's effect is atomic: dropping its future either applied the
/// whole operation or none of it. A caller that cancels a `lease` may leave a
/// batch leased until its deadline, after which it is re-leased.
#[async_trait]
pub trait Queue: Send + Sync + Debug + 'static {
    /// Appends a batch of messages and advances the job's checkpoint atomically.
    async fn push(&self, push: &Push) -> Result<Pushed>;

    /// Applies pushes in order, as `push` would one after the other;
    /// returns what each did, for a prefix of them: all of them, unless a
    /// push failed with a retryable error after the ones before it were
    /// applied (the caller goes on from the first one missing).
    ///
    /// The default makes one `push` call per push. Override it to do all in
    /// one round trip: the batcher hands over every chunk it has read while
    /// its previous call was on its way.
    ///
    /// # Errors
    ///
    /// The first push's error, or a later push's error that is not
    /// retryable (the pushes before it stay applied, as their `seq` shows).
    async fn push_all(&self, pushes: &[Push]) -> Result<Vec<Pushed>> {
        let mut done = Vec::with_capacity(pushes.len());
        for push in pushes {
            match self.push(push).await {
                Ok(pushed) => done.push(pushed),
                Err(e) if e.is_retryable() && !done.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Leases up to `max_batches` batches for `ttl`. Returns an empty vector
    /// when nothing is ready; it does not wait.
    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>>;

    /// Records that the lease's messages are about to be sent. After this, an
    /// expiry of the lease makes the batch in doubt.
    async fn mark_sending(&self, lease: &Lease) -> Result<()>;

    /// Extends a held lease to `ttl` from now; returns the new deadline.
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64>;

    /// Settles every message of a leased batch and ends the lease.
    async fn settle(&self, lease: &Lease, outcomes: &[Settle]) -> Result<()>;

    /// Settles `lease`, then marks `then.mark` as sending, then leases up
    /// to `then.lease` batches, as `settle`, `mark_sending` and `lease`
    /// would; returns what came of each.
    ///
    /// The default makes the calls one after the other. Override it to do
    /// all in one round trip: the deliverer calls it for every batch it
    /// finishes while it has work to go on with.
    ///
    /// # Errors
    ///
    /// A retryable error when the backend could not be reached: as with
    /// `settle`, a retry after a lost reply finds the settled lease gone
    /// ([`crate::Error::LeaseLost`]); marking again is harmless, and batches
    /// leased by the lost call come back when that lease expires. Every other
    /// failure is reported in [`Continued`], part by part.
    async fn settle_and_continue(
        &self,
        lease: &Lease,
        outcomes: &[Settle],
        then: Continue<'_>,
    ) -> Result<Continued> {
        let settled = match self.settle(lease, outcomes).await {
            Err(e) if e.is_retryable() => return Err(e),
            settled => settled,
        };
        let marked = match then.mark {
            Some(next) => Some(self.mark_sending(next).await),
            None => None,
        };
        let leased = match then.lease {
            0 => Ok(Vec::new()),
            n => self.lease(n, then.ttl).await,
        };
        Ok(Continued {
            settled,
            marked,
            leased,
        })
    }

    /// Gives back a lease that was not marked as sending.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Lists up to `limit` dead letters, of one job or of all.
    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Replays the dead letters of one job (or all); returns how many.
    async fn replay(&self, job: Option<&JobId>) -> Result<u64>;

    /// Counts of ready, leased, scheduled and dead messages.
    async fn stats(&self) -> Result<QueueStats>;
}

#[async_trait]
impl<T: Queue + ?Sized> Queue for Arc<T> {
    async fn push(&self, push: &Push) -> Result<Pushed> {
        (**self).push(push).await
    }
    async fn push_all(&self, pushes: &[Push]) -> Result<Vec<Pushed>> {
        (**self).push_all(pushes).await
    }
    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>> {
        (**self).lease(max_batches, ttl).await
    }
    async fn mark_sending(&self, lease: &Lease) -> Result<()> {
        (**self).mark_sending(lease).await
    }
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64> {
        (**self).extend(lease, ttl).await
    }
    async fn settle(&self, lease: &Lease, outcomes: &[Settle]) -> Result<()> {
        (**self).settle(lease, outcomes).await
    }
    async fn settle_and_continue(
        &self,
        lease: &Lease,
        outcomes: &[Settle],
        then: Continue<'_>,
    ) -> Result<Continued> {
        (**self).settle_and_continue(lease, outcomes, then).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        (**self).release(lease).await
    }
    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>> {
        (**self).dead_letters(job, limit).await
    }
    async fn replay(&self, job: Option<&JobId>) -> Result<u64> {
        (**self).replay(job).await
    }
    async fn stats(&self) -> Result<QueueStats> {
        (**self).stats().await
    }
}

/// What [`Queue::settle_and_continue`] does after the settle.
///
/// Not `#[non_exhaustive]`: backends read every field, so a new one is a breaking change of the backend protocol.
#[derive(Clone, Copy, Debug)]
pub struct Continue<'a> {
    /// A held lease to mark as sending: the batch that takes over the
    /// settled batch's sending slot.
    pub mark: Option<&'a Lease>,
    /// How many batches to lease (0 for none).
    pub lease: usize,
    /// For how long, as in [`Queue::lease`].
    pub ttl: Duration,
}

/// What [`Queue::settle_and_continue`] did, part by part.
///
/// Not `#[non_exhaustive]`: backends build it, so a new field is a breaking change of the backend protocol.
#[derive(Debug)]
#[must_use]
pub struct Continued {
    /// The settle, as [`Queue::settle`] would have returned it.
    pub settled: Result<()>,
    /// The mark, as [`Queue::mark_sending`] would have returned it; `None`
    /// when no mark was asked for. A retryable error here (from a backend
    /// that makes one call per part) means the mark may be tried again.
    pub marked: Option<Result<()>>,
    /// The lease, as [`Queue::lease`] would have returned it.
    pub leased: Result<Vec<Lease>>,
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn Queue>) {}
