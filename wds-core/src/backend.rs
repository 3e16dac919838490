//! The backend protocol: what a storage backend implements and what the
//! engine asks of it.
//!
//! An embedder picks a backend crate (`wds-memory`, `wds-sqlite`,
//! `wds-redis`) and hands it to [`EngineBuilder::backend`](crate::EngineBuilder::backend);
//! nothing here is needed for that. This module is for the two other
//! audiences:
//!
//! - **backend authors**, who implement [`Queue`] and [`OffsetStore`] over
//!   one store and declare it a [`Backend`], and optionally [`JobControl`]
//!   (operator actions), [`WorkerRegistry`] (worker heartbeats) and
//!   [`CircuitStore`] (a circuit breaker shared by workers), and run
//!   `wds_core::testkit` against it;
//! - **operators' tools** (a control API, a status page), which read queue
//!   depth ([`QueueStats`]), line outcomes ([`LineOutcome`], [`Receipt`])
//!   and worker liveness.
//!
//! What lives here and why: every trait whose implementation is a storage
//! concern, and every type that appears only in those traits' signatures
//! (a batch and its lease, the batcher's push and checkpoint, a settle, a
//! claim, the stored outcome of a line), plus the shared clock [`now_ms`]
//! and the detail limits of [`OffsetStore`]. Types an embedder meets
//! without touching a backend ([`Message`](crate::Message),
//! [`JobReport`], [`DeadLetter`]…)
//! stay at the crate root; the circuit breaker's settings stay in
//! [`crate::health`], where an embedder configures it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{DeadLetter, JobId, JobMeta, JobReport, MessageId};

pub use crate::control::{Action, JobControl};
pub use crate::health::state::CircuitState;
pub use crate::health::store::CircuitStore;
pub use crate::model::{
    now_ms, Batch, BatchId, Checkpoint, Claim, Lease, LeaseId, LineOutcome, Push, Pushed,
    QueueStats, Receipt, Reject, RejectKind, Settle,
};
pub use crate::offsets::{OffsetStore, DEFAULT_DETAIL_LIMIT, DETAIL_NOT_KEPT};
pub use crate::queue::{Continue, Continued, Queue};
pub use crate::workers::{
    heartbeat, WorkerBeat, WorkerRegistry, WorkerSeen, BEAT_INTERVAL, WORKER_RETENTION,
};

/// A queue and an offset store that are views of ONE store: what
/// [`EngineBuilder::backend`](crate::EngineBuilder::backend) takes.
///
/// The guarantees rest on it. [`Queue::push`] stores a batch of messages
/// and the job's next [`Checkpoint`] in one atomic step, and
/// [`Queue::settle`] records a line's outcome and the job's counts in the
/// same step as it removes the message: that is how a batcher that dies
/// mid-file neither enqueues a line twice nor skips one (G1, G4), and how
/// `delivered + dead + invalid + duplicate == lines` holds for every job
/// (G2). A queue from one store paired with the offsets of another would
/// break all of that silently, so the engine takes both as one value and
/// this trait is how a type says it is both.
///
/// There is no blanket implementation: a type declares it, which is its
/// author's statement that its queue and offsets share one store.
pub trait Backend: Queue + OffsetStore + Clone {}

/// Any [`Backend`], its type chosen at run time (memory, SQLite or Redis
/// by a command-line flag, say), for
/// [`EngineBuilder::backend`](crate::EngineBuilder::backend).
///
/// [`Backend`] is not object safe (it is `Clone`), so `Arc<dyn Backend>`
/// cannot exist; this is its stand-in. It is made only from one
/// [`Backend`] value, so its queue and offsets are still views of one
/// store, and every call goes to that backend's own implementation.
///
/// ```
/// # fn demo<B: wds_core::backend::Backend>(chosen: B) -> wds_core::Result<()> {
/// use wds_core::backend::AnyBackend;
/// let backend = AnyBackend::new(chosen);
/// # let _ = backend;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AnyBackend {
    inner: Arc<dyn Store>,
}

/// The object-safe part of a [`Backend`].
trait Store: Queue + OffsetStore {}
impl<B: Backend> Store for B {}

impl AnyBackend {
    /// `backend`, its type erased.
    pub fn new<B: Backend>(backend: B) -> Self {
        AnyBackend {
            inner: Arc::new(backend),
        }
    }
}

// Made from one `Backend`: its queue and offsets are that backend's.
impl Backend for AnyBackend {}

#[async_trait]
impl Queue for AnyBackend {
    async fn push(&self, push: &Push) -> Result<Pushed> {
        self.inner.push(push).await
    }
    async fn push_all(&self, pushes: &[Push]) -> Result<Vec<Pushed>> {
        self.inner.push_all(pushes).await
    }
    async fn lease(&self, max_batches: usize, ttl: Duration) -> Result<Vec<Lease>> {
        self.inner.lease(max_batches, ttl).await
    }
    async fn mark_sending(&self, lease: &Lease) -> Result<()> {
        self.inner.mark_sending(lease).await
    }
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<u64> {
        self.inner.extend(lease, ttl).await
    }
    async fn settle(&self, lease: &Lease, outcomes: &[Settle]) -> Result<()> {
        self.inner.settle(lease, outcomes).await
    }
    async fn settle_and_continue(
        &self,
        lease: &Lease,
        outcomes: &[Settle],
        then: Continue<'_>,
    ) -> Result<Continued> {
        self.inner.settle_and_continue(lease, outcomes, then).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }
    async fn dead_letters(&self, job: Option<&JobId>, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(job, limit).await
    }
    async fn replay(&self, job: Option<&JobId>) -> Result<u64> {
        self.inner.replay(job).await
    }
    async fn stats(&self) -> Result<QueueStats> {
        self.inner.stats().await
    }
}

#[async_trait]
impl OffsetStore for AnyBackend {
    async fn claim(&self, identity: &str, meta: JobMeta) -> Result<Claim> {
        self.inner.claim(identity, meta).await
    }
    async fn checkpoint(&self, job: &JobId) -> Result<Checkpoint> {
        self.inner.checkpoint(job).await
    }
    async fn report(&self, job: &JobId) -> Result<Option<JobReport>> {
        self.inner.report(job).await
    }
    async fn reports(&self) -> Result<Vec<JobReport>> {
        self.inner.reports().await
    }
    async fn outcome(&self, id: &MessageId) -> Result<Option<LineOutcome>> {
        self.inner.outcome(id).await
    }
    async fn rejects(&self, job: &JobId, limit: usize) -> Result<Vec<Reject>> {
        self.inner.rejects(job, limit).await
    }
    async fn fail(&self, job: &JobId, reason: &str) -> Result<JobReport> {
        self.inner.fail(job, reason).await
    }
}
