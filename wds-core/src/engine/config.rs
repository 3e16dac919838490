//! Engine settings.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::health::CircuitSettings;
use crate::parse::Limits;
use crate::retry::RetryPolicy;

/// What the engine does with a message whose worker died while it was on the
/// wire (guarantees G1, G2 and G5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryMode {
    /// Never call the sink twice for one message: an in-doubt message is
    /// dead-lettered as `in_doubt` (replayable by hand). The default.
    #[default]
    AtMostOnce,
    /// Re-send in-doubt messages with the same id; a receiver that drops
    /// repeated ids then sees every message exactly once.
    AtLeastOnce,
}

impl std::str::FromStr for DeliveryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "at_most_once" | "atmostonce" => Ok(DeliveryMode::AtMostOnce),
            "at_least_once" | "atleastonce" => Ok(DeliveryMode::AtLeastOnce),
            other => Err(format!(
                "unknown delivery mode {other:?} (expected at-most-once or at-least-once)"
            )),
        }
    }
}

/// Settings of the [`crate::Engine`], the [`crate::engine::Batcher`] and the
/// [`crate::engine::Deliverer`]. Start from `EngineConfig::default()`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Messages per batch (one queue round trip each). Default 100.
    pub batch_size: usize,
    /// The batcher stops reading while more than this many messages are ready
    /// in the queue (backpressure). Default 100,000.
    pub high_water: u64,
    /// Sink calls in flight at once, per deliverer. Default 64. With
    /// `adaptive_concurrency`, the most it may adapt to.
    pub concurrency: usize,
    /// Adapt the calls in flight to the endpoint, between 1 and
    /// `concurrency` (AIMD: one more per round of calls while they succeed
    /// at the baseline latency, 10% fewer on a 503, timeout, 429 or a
    /// latency half again above the baseline). Default false.
    pub adaptive_concurrency: bool,
    /// Batches a deliverer holds at once (leased ahead, so round trips to the
    /// queue overlap with sending); 0 means twice the sending window.
    /// Only the sending window's batches are ever marked as sending, so this
    /// does not grow the in-doubt set.
    pub batches_in_flight: usize,
    /// How long a lease lasts without being extended. Default 30 s.
    pub lease_ttl: Duration,
    /// Timeout of one sink call; a timeout is a retryable failure. Default 10 s.
    pub delivery_timeout: Duration,
    /// Retries of retryable failures.
    pub retry: RetryPolicy,
    /// At-most-once (default) or at-least-once.
    pub mode: DeliveryMode,
    /// Size limits on input records.
    pub limits: Limits,
    /// Longest wait between two lease attempts on an idle queue. Default 100 ms.
    pub idle_poll: Duration,
    /// Inputs read at the same time by one engine. Default 4.
    pub concurrent_jobs: usize,
    /// `(userId, alertMessage)` pairs of a job the duplicate filter keeps
    /// in memory (24 bytes each) before it sorts them on disk, in
    /// `spill_dir`. Default 1,048,576 (24 MiB per job being read).
    pub dedupe_memory_pairs: usize,
    /// Where the duplicate filter spills (unnamed files, gone when the
    /// job's read ends or the process dies). `None`: the system's
    /// temporary directory. Prefer a disk to a RAM-backed `/tmp`.
    pub spill_dir: Option<std::path::PathBuf>,
    /// When the endpoint's circuit opens and how it is probed (used when
    /// the engine has a circuit store, see [`crate::EngineBuilder::circuit`]).
    pub circuit: CircuitSettings,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch_size: 100,
            high_water: 100_000,
            concurrency: 64,
            adaptive_concurrency: false,
            batches_in_flight: 0,
            lease_ttl: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            mode: DeliveryMode::AtMostOnce,
            limits: Limits::default(),
            idle_poll: Duration::from_millis(100),
            concurrent_jobs: 4,
            dedupe_memory_pairs: super::seen::DEFAULT_MEMORY_PAIRS,
            spill_dir: None,
            circuit: CircuitSettings::default(),
        }
    }
}

impl EngineConfig {
    /// Checks the settings, with a message that names the bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &'static str, reason: &str| Err(Error::config(setting, reason));
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.concurrent_jobs == 0 {
            return bad("concurrent_jobs", "must be at least 1");
        }
        if self.dedupe_memory_pairs == 0 {
            return bad("dedupe_memory_pairs", "must be at least 1");
        }
        if self.lease_ttl < Duration::from_millis(50) {
            return bad("lease_ttl", "must be at least 50 ms");
        }
        if self.delivery_timeout.is_zero() {
            return bad("delivery_timeout", "must be positive");
        }
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts", "must be at least 1");
        }
        self.circuit.validate()
    }

    /// Batches a deliverer holds at once.
    pub fn effective_batches_in_flight(&self) -> usize {
        if self.batches_in_flight > 0 {
            self.batches_in_flight
        } else {
            2 * self.sending_batches()
        }
    }

    /// Batches a deliverer has marked as sending at once,
    /// `concurrency / batch_size + 2`: enough to keep every call slot busy.
    /// A deliverer that dies leaves at most this many batches in doubt.
    pub fn sending_batches(&self) -> usize {
        (self.concurrency / self.batch_size.max(1) + 2).min(self.effective_cap())
    }

    /// The settings of `threads` deliverers that share this configuration's
    /// concurrency ([`crate::engine::DeliveryThreads`]): each gets an equal
    /// share of [`concurrency`](EngineConfig::concurrency) (the first ones
    /// one more when it does not divide), so the shares add up to it; never
    /// more deliverers than calls. Every other setting is kept.
    ///
    /// Each deliverer has its own sending window: a process running these
    /// may leave the sum of their [`sending_batches`](Self::sending_batches)
    /// in doubt when it dies. With [`batches_in_flight`](Self::batches_in_flight)
    /// left at 0, the batches held ahead are shared out too: each deliverer
    /// holds its sending window and one batch waiting for a slot (or its
    /// share of the unsplit hold, if larger), so a worker on several threads
    /// leases little more of the queue ahead than on one (6 batches instead
    /// of 4 on two threads with the defaults), leaving the rest to the other
    /// workers.
    ///
    /// ```
    /// let config = wds_core::EngineConfig::default(); // concurrency 64
    /// let shares: Vec<usize> = config.split(3).iter().map(|c| c.concurrency).collect();
    /// assert_eq!(shares, [22, 21, 21]);
    /// ```
    pub fn split(&self, threads: usize) -> Vec<EngineConfig> {
        let threads = threads.clamp(1, self.concurrency.max(1));
        let (share, rest) = (self.concurrency / threads, self.concurrency % threads);
        let held = self.effective_batches_in_flight();
        (0..threads)
            .map(|i| {
                let mut c = EngineConfig {
                    concurrency: share + usize::from(i < rest),
                    ..self.clone()
                };
                if self.batches_in_flight == 0 && threads > 1 {
                    // Its sending window and one batch waiting to take over
                    // a slot, or its share of the unsplit hold if larger.
                    let held_share = held / threads + usize::from(i < held % threads);
                    c.batches_in_flight = held_share.max(c.sending_batches() + 1);
                }
                c
            })
            .collect()
    }

    /// Messages a process delivering on `threads` deliverers of
    /// [`split`](Self::split) may leave in doubt when it dies: the sum of
    /// their sending windows (`sending_batches() * batch_size` each), the
    /// bound of G2.
    ///
    /// ```
    /// let config = wds_core::EngineConfig::default(); // 64 calls, batches of 100
    /// assert_eq!(config.in_doubt_window(1), 200);
    /// assert_eq!(config.in_doubt_window(2), 400);
    /// ```
    pub fn in_doubt_window(&self, threads: usize) -> usize {
        self.split(threads)
            .iter()
            .map(|c| c.sending_batches() * c.batch_size)
            .sum()
    }

    fn effective_cap(&self) -> usize {
        if self.batches_in_flight > 0 {
            self.batches_in_flight
        } else {
            usize::MAX
        }
    }
}
