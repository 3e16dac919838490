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
//! [`JobReport`](crate::JobReport), [`DeadLetter`](crate::DeadLetter)…)
//! stay at the crate root; the circuit breaker's settings stay in
//! [`crate::health`], where an embedder configures it.

use std::sync::Arc;

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
/// cannot exist; this is its stand-in. Its [`DynBackend`] can only come
/// from one [`Backend`] value, so its queue and offsets are still views of
/// one store, and every call goes to that backend's own implementation.
///
/// ```
/// # fn demo<B: wds_core::backend::Backend>(chosen: B) {
/// use std::sync::Arc;
/// use wds_core::backend::AnyBackend;
/// let backend: AnyBackend = Arc::new(chosen);
/// # let _ = backend;
/// # }
/// ```
pub type AnyBackend = Arc<dyn DynBackend>;

/// The object-safe part of a [`Backend`], behind an [`AnyBackend`].
///
/// Implemented for every [`Backend`] and nothing else (it is sealed), so
/// that an `AnyBackend` is always one store.
pub trait DynBackend: Queue + OffsetStore + sealed::Sealed {}

impl<B: Backend> DynBackend for B {}

mod sealed {
    /// Only a [`Backend`](super::Backend) is a
    /// [`DynBackend`](super::DynBackend).
    pub trait Sealed {}
    impl<B: super::Backend> Sealed for B {}
}

// Made from one `Backend`: its queue and offsets are that backend's (the
// calls go through the `Arc` implementations of `Queue` and `OffsetStore`).
impl Backend for AnyBackend {}
