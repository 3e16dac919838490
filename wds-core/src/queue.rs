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
/// A `Queue` and the [`crate::OffsetStore`] it is used with MUST be views of the
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
/// - [`lease`](Queue::lease) MUST hand each batch to at most one holder at a
///   time. It MUST first re-lease batches whose lease expired (with
///   [`Lease::previously_sending`] set when the expired holder had called
///   [`mark_sending`](Queue::mark_sending)), then move due retries to ready,
///   then lease ready batches in push order. A lease expires at
///   `deadline_ms`, after which its id MUST NOT be accepted by any method.
/// - [`settle`](Queue::settle) MUST be given every message of the leased batch
///   exactly once, MUST apply all of it atomically, and MUST fail with
///   [`crate::Error::LeaseLost`] (changing nothing) when the lease is not held.
///   `Delivered` and `Dead` are terminal and counted in the job's report;
///   `Retry` makes the message leasable again no earlier than its `at_ms`.
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
    async fn push(&self, push: Push) -> Result<Pushed>;

    /// Leases up to `max_batches` batches for `ttl`. Returns an empty vector
    /// when nothing is ready; it does not wait.
    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>>;

    /// Records that the lease's messages are about to be sent. After this, an
    /// expiry of the lease makes the batch in doubt.
    async fn mark_sending(&self, lease: &Lease) -> Result<()>;

    /// Extends a held lease to `ttl` from now; returns the new deadline.
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64>;

    /// Settles every message of a leased batch and ends the lease.
    async fn settle(&self, lease: &Lease, outcomes: Vec<Settle>) -> Result<()>;

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
    async fn push(&self, push: Push) -> Result<Pushed> {
        (**self).push(push).await
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
    async fn settle(&self, lease: &Lease, outcomes: Vec<Settle>) -> Result<()> {
        (**self).settle(lease, outcomes).await
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

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn Queue>) {}
