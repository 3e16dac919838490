//! Rate limiting of deliveries: the [`Limiter`] trait and the in-process
//! [`LocalLimiter`] (governor's GCRA plus a shared back-off).

use std::fmt::Debug;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};
use crate::model::now_ms;

/// Gates deliveries to one endpoint.
///
/// The deliverer calls [`acquire`](Limiter::acquire) before every call to the
/// sink, and [`back_off`](Limiter::back_off) when the endpoint answered 429.
///
/// # Contract
///
/// - `acquire(n)` MUST NOT return before `n` permits fit within the configured
///   rate, counted across every user of the limiter (one process for
///   [`LocalLimiter`], all workers for a shared one), nor before the end of any
///   back-off in force.
/// - `back_off(until_ms)` MUST make every `acquire` that starts or is waiting
///   wait until at least `until_ms` ([`now_ms`] time); a shorter back-off never
///   shortens a longer one.
///
/// # Errors
///
/// A shared limiter returns [`Error::Unavailable`] when its backend cannot be
/// reached; the deliverer waits and retries.
///
/// # Cancel safety
///
/// Dropping an `acquire` future may waste the permits it took, never more.
#[async_trait]
pub trait Limiter: Send + Sync + Debug + 'static {
    /// Waits for `n` permits (`n` ≥ 1, at most the burst).
    async fn acquire(&self, n: u32) -> Result<()>;
    /// Pauses every delivery until `until_ms`.
    async fn back_off(&self, until_ms: u64) -> Result<()>;
}

#[async_trait]
impl<T: Limiter + ?Sized> Limiter for Arc<T> {
    async fn acquire(&self, n: u32) -> Result<()> {
        (**self).acquire(n).await
    }
    async fn back_off(&self, until_ms: u64) -> Result<()> {
        (**self).back_off(until_ms).await
    }
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn Limiter>) {}

/// An in-process limiter: `rate` permits per second with bursts of up to
/// `burst` (of which it uses half, keeping the rest as a margin for jitter
/// at an endpoint that enforces the same limit), or unlimited, plus a
/// back-off shared by every task of the process.
#[derive(Debug)]
pub struct LocalLimiter {
    gcra: Option<DefaultDirectRateLimiter>,
    pause: Pause,
}

impl LocalLimiter {
    /// `rate` per second, bursts of `burst` (both at least 1).
    pub fn per_second(rate: u32, burst: u32) -> Result<Self> {
        let rate = NonZeroU32::new(rate)
            .ok_or_else(|| Error::config("rate", "must be at least 1 per second"))?;
        let burst =
            NonZeroU32::new(burst).ok_or_else(|| Error::config("burst", "must be at least 1"))?;
        // Pace with half the burst's tolerance, keeping the rest as a margin
        // for jitter: a full burst leaves an endpoint that enforces the same
        // rate and burst with an empty bucket, so any request that arrives a
        // little early gets a 429 (and a pause of every delivery). The same
        // margin as `wds_redis::RedisLimiter`'s.
        let paced = NonZeroU32::new(burst.get().div_ceil(2)).unwrap_or(NonZeroU32::MIN);
        Ok(LocalLimiter {
            gcra: Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(paced),
            )),
            pause: Pause::default(),
        })
    }

    /// No rate limit; only back-offs apply.
    pub fn unlimited() -> Self {
        LocalLimiter {
            gcra: None,
            pause: Pause::default(),
        }
    }
}

/// A pause every task of a process honours: the local half of
/// [`Limiter::back_off`], for limiters to build on.
#[derive(Debug, Default)]
pub struct Pause {
    until_ms: AtomicU64,
}

impl Pause {
    /// Pauses until `until_ms` ([`now_ms`] time); a shorter pause never
    /// shortens a longer one.
    pub fn until(&self, until_ms: u64) {
        self.until_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    /// Waits until no pause is in force (at once when none is), including
    /// pauses that start while waiting.
    pub async fn wait(&self) {
        loop {
            let until = self.until_ms.load(Ordering::Acquire);
            if until == 0 {
                // Never paused: no need to read the clock.
                return;
            }
            let now = now_ms();
            if until <= now {
                return;
            }
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self, n: u32) -> Result<()> {
        self.pause.wait().await;
        if let Some(gcra) = &self.gcra {
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            gcra.until_n_ready(n).await.map_err(|e| {
                Error::config("burst", format!("cannot take {n} permits at once: {e}"))
            })?;
            // A back-off may have started while we waited for the permits.
            self.pause.wait().await;
        }
        Ok(())
    }

    async fn back_off(&self, until_ms: u64) -> Result<()> {
        self.pause.until(until_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn holds_the_rate_after_the_burst() {
        let l = LocalLimiter::per_second(100, 10).unwrap();
        let start = Instant::now();
        for _ in 0..60 {
            l.acquire(1).await.unwrap();
        }
        // 10 free, then 50 at 100/s: at least ~500 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(450),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn back_off_pauses_and_never_shortens() {
        let l = LocalLimiter::unlimited();
        l.back_off(now_ms() + 300).await.unwrap();
        l.back_off(now_ms() + 50).await.unwrap();
        let start = Instant::now();
        l.acquire(1).await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn zero_rate_is_a_config_error() {
        assert!(matches!(
            LocalLimiter::per_second(0, 1),
            Err(Error::Config {
                setting: "rate",
                ..
            })
        ));
    }
}
