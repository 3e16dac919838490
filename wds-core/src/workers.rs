//! Which workers a deployment has seen: each worker process sends a
//! [`WorkerBeat`] (its id, host, process and delivery counters) to a
//! [`WorkerRegistry`] in the shared backend every few seconds, and any
//! process sharing that backend (the control API of the initiator) lists
//! them with the time each was last heard from.
//!
//! [`heartbeat`] is the loop a worker runs beside its deliverer.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// How often a worker beats by default.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(2);

/// How long a store keeps a worker it has not heard from, by default.
pub const WORKER_RETENTION: Duration = Duration::from_secs(10 * 60);

/// What a worker says of itself in one beat. Counters are totals since the
/// worker started, so a lost beat loses nothing but freshness.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerBeat {
    /// The worker's id, unique in the deployment (e.g. `host-pid`).
    pub worker: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started (Unix milliseconds, its own clock).
    pub started_ms: u64,
    /// Sink calls that delivered.
    pub delivered: u64,
    /// Sink calls that failed, 429s aside (retried or not).
    pub failed: u64,
    /// Sink calls answered 429 (rate limited).
    pub rate_limited: u64,
    /// Sink calls on the wire now.
    pub in_flight: u64,
    /// Sink calls it may have on the wire now (fixed or adapted).
    pub concurrency_limit: u64,
}

impl WorkerBeat {
    /// A beat of `worker` with every other field empty or zero.
    pub fn new(worker: impl Into<String>) -> Self {
        WorkerBeat {
            worker: worker.into(),
            host: String::new(),
            pid: 0,
            started_ms: 0,
            delivered: 0,
            failed: 0,
            rate_limited: 0,
            in_flight: 0,
            concurrency_limit: 0,
        }
    }

    /// Sets the host and process id.
    pub fn process(mut self, host: impl Into<String>, pid: u32) -> Self {
        self.host = host.into();
        self.pid = pid;
        self
    }

    /// Sets when the worker started (Unix milliseconds).
    pub fn started_ms(mut self, ms: u64) -> Self {
        self.started_ms = ms;
        self
    }

    /// Sets the call counters: delivered, failed (429s aside), rate limited.
    pub fn calls(mut self, delivered: u64, failed: u64, rate_limited: u64) -> Self {
        self.delivered = delivered;
        self.failed = failed;
        self.rate_limited = rate_limited;
        self
    }

    /// Sets the calls in flight and their limit.
    pub fn in_flight(mut self, in_flight: u64, concurrency_limit: u64) -> Self {
        self.in_flight = in_flight;
        self.concurrency_limit = concurrency_limit;
        self
    }
}

/// A worker's last beat, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerSeen {
    /// The last beat stored for the worker.
    pub beat: WorkerBeat,
    /// When it was stored (Unix milliseconds, the store's clock).
    pub seen_ms: u64,
}

impl WorkerSeen {
    /// A beat stored at `seen_ms` (for backends).
    pub fn new(beat: WorkerBeat, seen_ms: u64) -> Self {
        WorkerSeen { beat, seen_ms }
    }
}

/// Keeps the last [`WorkerBeat`] of every worker of a deployment, so that
/// every process sharing the backend can list them.
///
/// Each worker process sends a beat (its id, host, process and delivery
/// counters) every few seconds ([`heartbeat`] is the loop a worker runs
/// beside its deliverer), and any process sharing the backend (the control
/// API of the initiator) lists them with the time each was last heard from.
///
/// # Contract
///
/// - `beat(b)` MUST store `b` as the last beat of `b.worker`, replacing
///   the one stored before (the last beat per worker id wins), with
///   `seen_ms` the store's clock at the time (Unix milliseconds; one clock
///   for every process sharing the store, such as Redis's `TIME`).
/// - `workers()` MUST list each worker whose last beat is stored exactly
///   once, with that beat and its `seen_ms`, as every process sharing the
///   backend sees it. The order is not specified.
/// - Any string is a valid worker id.
/// - A worker not heard from for the store's retention
///   ([`WORKER_RETENTION`] unless the backend lets you configure it) MAY be
///   forgotten and MUST NOT be kept for ever: a store SHOULD drop it in a
///   later `beat` or `workers` call, so the store does not grow with every
///   worker that ever ran. Workers heard from within the retention MUST
///   be listed.
///
/// # Errors
///
/// [`crate::Error::Unavailable`] when the backend cannot be reached; a
/// stored beat that cannot be read is [`crate::Error::Corrupt`]. A worker
/// that fails to beat just beats again later ([`heartbeat`] never stops on
/// an error).
///
/// # Cancel safety
///
/// A dropped `beat` may or may not have been stored, as with any backend
/// call; `workers` only reads (or prunes what is past retention).
#[async_trait]
pub trait WorkerRegistry: Send + Sync + Debug + 'static {
    /// Stores `beat` as the last of its worker.
    async fn beat(&self, beat: &WorkerBeat) -> Result<()>;
    /// Every worker heard from within the retention, with its last beat.
    async fn workers(&self) -> Result<Vec<WorkerSeen>>;
}

#[async_trait]
impl<T: WorkerRegistry + ?Sized> WorkerRegistry for Arc<T> {
    async fn beat(&self, beat: &WorkerBeat) -> Result<()> {
        (**self).beat(beat).await
    }
    async fn workers(&self) -> Result<Vec<WorkerSeen>> {
        (**self).workers().await
    }
}

#[async_trait]
impl<T: WorkerRegistry + ?Sized> WorkerRegistry for Box<T> {
    async fn beat(&self, beat: &WorkerBeat) -> Result<()> {
        (**self).beat(beat).await
    }
    async fn workers(&self) -> Result<Vec<WorkerSeen>> {
        (**self).workers().await
    }
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn WorkerRegistry>) {}

/// Beats into `registry` with what `snapshot` says: once at start, every
/// `every` (use [`BEAT_INTERVAL`] unless you have a reason), and once more
/// when `stop` fires, with the final counters, before returning.
///
/// Fire `stop` once the worker has finished delivering (after
/// [`crate::engine::Deliverer::run`] returned), so the last beat counts every call.
/// A store error is logged and the beat tried again at the next tick:
/// a backend outage never stops a worker.
pub async fn heartbeat(
    registry: &dyn WorkerRegistry,
    every: Duration,
    snapshot: impl Fn() -> WorkerBeat + Send,
    stop: CancellationToken,
) {
    let every = every.max(Duration::from_millis(10));
    let mut failing = false;
    loop {
        let beat = snapshot();
        match registry.beat(&beat).await {
            Ok(()) if failing => {
                tracing::info!(worker = %beat.worker, "worker beats stored again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                // Once per outage at warn; the rest at debug.
                if failing {
                    tracing::debug!(worker = %beat.worker, error = %e, "worker beat not stored");
                } else {
                    tracing::warn!(worker = %beat.worker, error = %e, "worker beat not stored; trying again every beat");
                    failing = true;
                }
            }
        }
        if stop.is_cancelled() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => {
                // The final beat, with the counters as they end.
                let beat = snapshot();
                if let Err(e) = registry.beat(&beat).await {
                    tracing::warn!(worker = %beat.worker, error = %e, "last worker beat not stored");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::Error;

    /// Records beats; fails the first `fail` of them.
    #[derive(Debug, Default)]
    struct Recorder {
        beats: Mutex<Vec<WorkerBeat>>,
        fail: AtomicU64,
    }

    #[async_trait]
    impl WorkerRegistry for Recorder {
        async fn beat(&self, beat: &WorkerBeat) -> Result<()> {
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(Error::unavailable("beat", "down"));
            }
            self.beats.lock().unwrap().push(beat.clone());
            Ok(())
        }
        async fn workers(&self) -> Result<Vec<WorkerSeen>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beats_at_start_every_tick_and_at_stop_through_errors() {
        let registry = Recorder::default();
        registry.fail.store(2, Ordering::SeqCst);
        let delivered = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let snapshot = {
            let delivered = delivered.clone();
            move || WorkerBeat::new("w").calls(delivered.load(Ordering::SeqCst), 0, 0)
        };
        let run = heartbeat(&registry, Duration::from_secs(2), snapshot, stop.clone());
        let drive = async {
            // Beats at 0 (fails), 2 (fails), 4, 6; then the counters move and it stops.
            tokio::time::sleep(Duration::from_millis(7_000)).await;
            delivered.store(42, Ordering::SeqCst);
            stop.cancel();
        };
        tokio::join!(run, drive);
        let beats = registry.beats.lock().unwrap().clone();
        let counts: Vec<u64> = beats.iter().map(|b| b.delivered).collect();
        assert_eq!(
            counts,
            vec![0, 0, 42],
            "two beats failed and were retried at the next ticks; the last one carries the final counters"
        );
    }
}
