//! How many sink calls a deliverer has in flight: a fixed number, or a
//! limit adapted to the endpoint (AIMD, like Vector's adaptive request
//! concurrency).
//!
//! The adaptive limit grows by one call per round of calls (one call per
//! call in flight) while calls succeed with a latency near the endpoint's
//! baseline and the limit is in use, and shrinks to 90% when a round saw
//! back-pressure: a 503 or another retryable failure, a timeout, a 429,
//! or a mean latency half again above the baseline (the endpoint queues:
//! more calls at once only wait longer). The baseline is the lowest mean
//! latency of the last 100 rounds: a limit that creeps past the knee
//! cannot drag it up with it, and an endpoint that became slower for good
//! is not shrunk to one call.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Where an adaptive limit starts.
const INITIAL: usize = 8;
/// A round's mean latency above `baseline × LATENCY_RISE` is back-pressure.
const LATENCY_RISE: f64 = 1.5;
/// The share of the limit kept on back-pressure.
const DECREASE: f64 = 0.9;
/// Rounds whose lowest mean latency is the baseline.
const BASELINE_ROUNDS: usize = 100;

/// How a call went, for the limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Signal {
    /// An answer (delivered, or refused for good) after this long.
    Answered(Duration),
    /// A 503 or another retryable failure, a timeout, a 429.
    BackPressure,
}

/// The calls in flight of one deliverer.
#[derive(Debug)]
pub(crate) struct CallLimit {
    permits: Semaphore,
    /// The limit now (permits in the semaphore and in use, minus `owed`).
    limit: AtomicUsize,
    /// Permits to drop as they come back: a decrease not yet applied.
    owed: AtomicUsize,
    in_flight: AtomicUsize,
    /// Whether every permit was in use at some point of this round.
    saturated: AtomicBool,
    adaptive: Option<Mutex<Aimd>>,
}

/// The adaptive limit's round and baseline.
#[derive(Debug)]
struct Aimd {
    max: usize,
    /// The mean latency of the last rounds, oldest first.
    means: VecDeque<f64>,
    calls: usize,
    answered: usize,
    latency_sum: f64,
    pressure: bool,
}

/// One call's permit: give it back with [`CallLimit::done`], or drop it.
#[derive(Debug)]
pub(crate) struct CallPermit<'a> {
    limit: &'a CallLimit,
    permit: Option<SemaphorePermit<'a>>,
}

impl CallLimit {
    /// Always `n` calls at once.
    pub(crate) fn fixed(n: usize) -> Self {
        Self::new(n, None)
    }

    /// Adapted between 1 and `max` calls at once.
    pub(crate) fn adaptive(max: usize) -> Self {
        let start = INITIAL.min(max).max(1);
        Self::new(
            start,
            Some(Mutex::new(Aimd {
                max: max.max(1),
                means: VecDeque::new(),
                calls: 0,
                answered: 0,
                latency_sum: 0.0,
                pressure: false,
            })),
        )
    }

    fn new(limit: usize, adaptive: Option<Mutex<Aimd>>) -> Self {
        CallLimit {
            permits: Semaphore::new(limit),
            limit: AtomicUsize::new(limit),
            owed: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            saturated: AtomicBool::new(false),
            adaptive,
        }
    }

    /// The limit now.
    pub(crate) fn current(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// Waits for a call slot.
    pub(crate) async fn acquire(&self) -> CallPermit<'_> {
        // The semaphore is never closed.
        let permit = self.permits.acquire().await.ok();
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if in_flight >= self.current() {
            self.saturated.store(true, Ordering::Release);
        }
        CallPermit {
            limit: self,
            permit,
        }
    }

    /// Gives a permit back, telling an adaptive limit how the call went.
    pub(crate) fn done(&self, permit: CallPermit<'_>, signal: Signal) {
        drop(permit);
        let Some(aimd) = &self.adaptive else {
            return;
        };
        let mut aimd = lock(aimd);
        aimd.calls += 1;
        match signal {
            Signal::Answered(latency) => {
                aimd.answered += 1;
                aimd.latency_sum += latency.as_secs_f64();
            }
            Signal::BackPressure => aimd.pressure = true,
        }
        let limit = self.current();
        if aimd.calls < limit {
            return;
        }
        // A round: about one call per call in flight.
        let mean = (aimd.answered > 0).then(|| aimd.latency_sum / aimd.answered as f64);
        let baseline = aimd.means.iter().copied().reduce(f64::min);
        let rose = match (mean, baseline) {
            (Some(mean), Some(base)) => mean > base * LATENCY_RISE,
            _ => false,
        };
        if let Some(mean) = mean {
            if aimd.means.len() == BASELINE_ROUNDS {
                aimd.means.pop_front();
            }
            aimd.means.push_back(mean);
        }
        let saturated = self.saturated.swap(false, Ordering::AcqRel);
        let next = if aimd.pressure || rose {
            ((limit as f64 * DECREASE) as usize).max(1)
        } else if saturated {
            (limit + 1).min(aimd.max)
        } else {
            limit
        };
        aimd.calls = 0;
        aimd.answered = 0;
        aimd.latency_sum = 0.0;
        aimd.pressure = false;
        drop(aimd);
        self.resize(limit, next);
    }

    fn resize(&self, from: usize, to: usize) {
        self.limit.store(to, Ordering::Release);
        if to < from {
            // Free permits go at once; those in use as their calls end.
            let forgotten = self.permits.forget_permits(from - to);
            self.owed.fetch_add(from - to - forgotten, Ordering::AcqRel);
            return;
        }
        let mut grow = to - from;
        // Cancel a decrease not yet applied before adding permits.
        while grow > 0 {
            let owed = self.owed.load(Ordering::Acquire);
            if owed == 0 {
                break;
            }
            let take = owed.min(grow);
            if self
                .owed
                .compare_exchange(owed, owed - take, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                grow -= take;
            }
        }
        self.permits.add_permits(grow);
    }
}

impl Drop for CallPermit<'_> {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        let Some(permit) = self.permit.take() else {
            return;
        };
        // A decrease is applied by not giving permits back.
        let owed = &self.limit.owed;
        let mut current = owed.load(Ordering::Acquire);
        while current > 0 {
            match owed.compare_exchange(current, current - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    permit.forget();
                    return;
                }
                Err(now) => current = now,
            }
        }
    }
}

fn lock(aimd: &Mutex<Aimd>) -> MutexGuard<'_, Aimd> {
    // Nothing panics while holding it; the counts stay consistent.
    aimd.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs rounds of `limit` calls answered after `latency(limit)`, or
    /// back-pressure when `pressure(limit)`; returns the limits seen.
    async fn rounds(
        calls: &CallLimit,
        n: usize,
        latency: impl Fn(usize) -> Duration,
        pressure: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..n {
            let limit = calls.current();
            let mut held = Vec::new();
            for _ in 0..limit {
                held.push(calls.acquire().await);
            }
            for permit in held {
                let signal = if pressure(limit) {
                    Signal::BackPressure
                } else {
                    Signal::Answered(latency(limit))
                };
                calls.done(permit, signal);
            }
            seen.push(calls.current());
        }
        seen
    }

    #[tokio::test]
    async fn grows_by_one_a_round_up_to_the_max_while_latency_holds() {
        let calls = CallLimit::adaptive(20);
        let seen = rounds(&calls, 30, |_| Duration::from_millis(10), |_| false).await;
        assert_eq!(&seen[..3], &[9, 10, 11]);
        assert_eq!(calls.current(), 20, "{seen:?}");
    }

    #[tokio::test]
    async fn settles_near_the_knee_of_a_queueing_endpoint() {
        // Serves 32 at once in 10 ms; more queue (latency grows), and past
        // 128 it answers 503.
        let calls = CallLimit::adaptive(256);
        let latency = |n: usize| Duration::from_millis(10 * n.div_ceil(32) as u64);
        let seen = rounds(&calls, 300, latency, |n| n > 128).await;
        let tail = &seen[200..];
        assert!(
            tail.iter().all(|l| (28..=64).contains(l)),
            "settles between the knee and latency half again above it: {tail:?}"
        );
    }

    #[tokio::test]
    async fn back_pressure_shrinks_and_permits_follow() {
        let calls = CallLimit::adaptive(100);
        rounds(&calls, 40, |_| Duration::from_millis(5), |_| false).await;
        let before = calls.current();
        rounds(&calls, 1, |_| Duration::from_millis(5), |_| true).await;
        let after = calls.current();
        assert_eq!(after, (before as f64 * DECREASE) as usize);
        // Exactly `after` calls may be in flight now.
        let mut held = Vec::new();
        for _ in 0..after {
            held.push(calls.acquire().await);
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(20), calls.acquire())
                .await
                .is_err(),
            "one call more than the limit"
        );
    }

    #[tokio::test]
    async fn a_fixed_limit_never_moves() {
        let calls = CallLimit::fixed(4);
        rounds(&calls, 5, |_| Duration::from_millis(1), |_| true).await;
        assert_eq!(calls.current(), 4);
    }
}
