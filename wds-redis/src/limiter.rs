//! [`RedisLimiter`]: one rate limit per endpoint, shared by every worker;
//! [`RedisBackOff`]: no rate, only the 429 back-off shared by every worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;
use wds_core::limiter::Pause;
use wds_core::{backend::now_ms, limiter::Limiter, Error, Result};

use crate::args;
use crate::backend::RedisBackend;
use crate::codec;

/// A [`Limiter`] shared through Redis by every worker that delivers to one
/// endpoint: GCRA (the generic cell rate algorithm) in one Lua script, plus
/// a shared back-off.
///
/// # How permits are shared
///
/// The script keeps the endpoint's *theoretical arrival time* in Redis and
/// hands out permits as time slots: permit `i` of a reservation may be used
/// from `base + i·T − τ`, where `T = 1/rate` and `τ = (burst − 1)·T`. Each
/// call reserves up to [`reserve`](RedisLimiter::reserve) permits whose slots
/// fall within a short look-ahead, and this instance hands them out locally,
/// each no earlier than its slot. So a busy worker makes one round trip per
/// `reserve` permits rather than one per message, while the permits used by
/// all workers together are exactly a GCRA-conforming sequence: never more
/// than `burst + rate·t` in any window of length `t`. A reserved permit
/// that is not used within one emission interval of its slot is dropped
/// (never used late), so an idle worker cannot save permits up.
///
/// # Jitter margin
///
/// The permits are paced with half the burst's tolerance,
/// `τ = (burst − 1)·T / 2`: a full burst would leave an endpoint that
/// enforces the same rate and burst with an empty bucket from then on, so
/// that any request arriving a little early (network or scheduling jitter,
/// a reply mapped to the local clock late) is answered 429, and each 429
/// pauses every worker for its `Retry-After`. Keeping half the tolerance as
/// a margin absorbs that jitter; the sustained rate is unchanged, and the
/// permits stay within `rate` with bursts of at most `burst`.
///
/// # Back-off
///
/// [`back_off`](Limiter::back_off) stores the pause in Redis: every
/// reservation made during it grants nothing until it ends, and this
/// instance drops the permits it holds and waits at once. Other instances
/// notice at their next reservation: until then each may still use the
/// permits it had already reserved, which is at most `reserve` permits
/// within one look-ahead (`reserve / rate`, 50 ms by default). Checking
/// Redis on every acquire would close that window at the price of one
/// round trip per message.
///
/// Times are Redis server time, so workers with skewed clocks agree.
///
/// ```no_run
/// # async fn demo(backend: wds_redis::RedisBackend, sink: impl wds_core::Sink) -> wds_core::Result<()> {
/// use std::sync::Arc;
/// use wds_redis::RedisLimiter;
///
/// let limiter = RedisLimiter::new(&backend, "alerts-api", 200, 20)?;
/// let engine = wds_core::Engine::builder()
///     .backend(backend)
///     .limiter(Arc::new(limiter))
///     .sink(sink)
///     .build()?;
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisLimiter {
    backend: RedisBackend,
    key: String,
    /// Emission interval T, in microseconds.
    interval_us: u64,
    /// Tolerance τ = (burst − 1)·T, in microseconds.
    tolerance_us: u64,
    burst: u32,
    reserve: u32,
    state: Mutex<Reserved>,
    /// This instance's back-off.
    pause: Pause,
    /// Bumped by every back-off, to drop permits reserved before it.
    epoch: AtomicU64,
}

/// Permits reserved and not yet handed out, by slot.
#[derive(Debug, Default)]
struct Reserved {
    slots: VecDeque<Instant>,
    epoch: u64,
}

/// What one reservation returned.
#[derive(Debug)]
struct Grant {
    granted: u32,
    now_us: u64,
    base_us: u64,
    pause_us: u64,
}

impl RedisLimiter {
    /// A limiter of `rate` permits per second with bursts of up to `burst`
    /// for the endpoint `endpoint` (any name; every worker that uses the same
    /// name and backend prefix shares the limit).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `rate` or `burst` is zero or `rate` is above
    /// one million per second.
    pub fn new(backend: &RedisBackend, endpoint: &str, rate: u32, burst: u32) -> Result<Self> {
        if rate == 0 || rate > 1_000_000 {
            return Err(Error::config(
                "rate",
                format!("must be between 1 and 1,000,000 per second, got {rate}"),
            ));
        }
        if burst == 0 {
            return Err(Error::config("burst", "must be at least 1"));
        }
        let interval_us = 1_000_000 / u64::from(rate);
        Ok(RedisLimiter {
            backend: backend.clone(),
            key: backend.own_slot_key("limit", endpoint),
            interval_us,
            // Half the burst's tolerance: see "Jitter margin" above.
            tolerance_us: u64::from(burst - 1) * interval_us / 2,
            burst,
            // About 50 ms of permits per round trip, within the burst.
            reserve: (rate / 20).clamp(1, burst),
            state: Mutex::new(Reserved::default()),
            pause: Pause::default(),
            epoch: AtomicU64::new(0),
        })
    }

    /// How many permits one round trip reserves at most (default `rate / 20`,
    /// between 1 and the burst). Larger means fewer round trips but a longer
    /// look-ahead (`reserve` emission intervals) and more permits that a
    /// worker that stops may waste.
    pub fn reserve(mut self, permits: u32) -> Self {
        self.reserve = permits.clamp(1, self.burst);
        self
    }

    /// The Redis key holding this endpoint's state.
    pub fn key(&self) -> &str {
        &self.key
    }

    async fn reserve_permits(&self, want: u32) -> Result<Grant> {
        let op = "limiter";
        let ahead_us = u64::from(self.reserve) * self.interval_us;
        let args = args::GcraReserve {
            interval_us: self.interval_us,
            tolerance_us: self.tolerance_us,
            permits: u64::from(want.clamp(1, self.burst)),
            ahead_us,
        };
        let invocation = args::keyed(&args, &[&self.key]);
        let reply = self.backend.inner.conns.invoke(op, &invocation).await?;
        let [granted, now, base, pause] = codec::array(op, &reply)? else {
            return Err(codec::unexpected(op, &reply));
        };
        Ok(Grant {
            granted: u32::try_from(codec::uint(op, granted)?).unwrap_or(0),
            now_us: codec::uint(op, now)?,
            base_us: codec::uint(op, base)?,
            pause_us: codec::uint(op, pause)?,
        })
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn acquire(&self, n: u32) -> Result<()> {
        self.pause.wait().await;
        let n = n.clamp(1, self.burst);
        // A permit may be handed out up to one emission interval after its
        // slot, never later: see the type's docs.
        let stale = Duration::from_micros(self.interval_us.max(1_000));
        let mut last_slot = None;
        let mut needed = n;
        {
            let mut reserved = self.state.lock().await;
            loop {
                let epoch = self.epoch.load(Ordering::Acquire);
                if reserved.epoch != epoch {
                    reserved.slots.clear();
                    reserved.epoch = epoch;
                }
                let now = Instant::now();
                while reserved.slots.front().is_some_and(|s| *s + stale < now) {
                    reserved.slots.pop_front();
                }
                while needed > 0 {
                    let Some(slot) = reserved.slots.pop_front() else {
                        break;
                    };
                    last_slot = Some(slot);
                    needed -= 1;
                }
                if needed == 0 {
                    break;
                }
                let grant = self.reserve_permits(needed.max(self.reserve)).await?;
                let arrived = Instant::now();
                if grant.pause_us > grant.now_us {
                    // Another worker backed off: wait with everyone.
                    tokio::time::sleep(Duration::from_micros(grant.pause_us - grant.now_us)).await;
                    continue;
                }
                // Slots in server time, mapped to our clock at the reply.
                let first_us = grant.base_us.saturating_sub(self.tolerance_us);
                if grant.granted == 0 {
                    let ahead_us = u64::from(self.reserve) * self.interval_us;
                    let wait = first_us.saturating_sub(grant.now_us + ahead_us);
                    tokio::time::sleep(Duration::from_micros(wait.max(500))).await;
                    continue;
                }
                for i in 0..u64::from(grant.granted) {
                    let at = (first_us + i * self.interval_us).saturating_sub(grant.now_us);
                    reserved
                        .slots
                        .push_back(arrived + Duration::from_micros(at));
                }
            }
        }
        if let Some(slot) = last_slot {
            tokio::time::sleep_until(slot).await;
        }
        // A back-off may have begun while we waited for the slot.
        self.pause.wait().await;
        Ok(())
    }

    async fn back_off(&self, until_ms: u64) -> Result<()> {
        self.pause.until(until_ms);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        store_back_off(&self.backend, &self.key, until_ms).await
    }
}

/// Stores a back-off until `until_ms` under `key`, for every worker.
async fn store_back_off(backend: &RedisBackend, key: &str, until_ms: u64) -> Result<()> {
    let pause_ms = until_ms.saturating_sub(now_ms());
    if pause_ms == 0 {
        return Ok(());
    }
    let args = args::GcraBackOff {
        pause_us: pause_ms.saturating_mul(1_000),
    };
    let invocation = args::keyed(&args, &[key]);
    backend
        .inner
        .conns
        .invoke("limiter back_off", &invocation)
        .await?;
    Ok(())
}

/// How often a [`RedisBackOff`] asks Redis whether another worker backed off.
const BACK_OFF_POLL: Duration = Duration::from_millis(100);

/// A [`Limiter`] with no rate that shares only the back-off: a 429 seen by
/// one worker pauses every worker that delivers to the same endpoint for its
/// `Retry-After`, as [`RedisLimiter`] does when a rate is set.
///
/// The instance that backs off pauses at once and stores the pause in Redis
/// (under the same key a [`RedisLimiter`] of that endpoint uses, so the two
/// agree); the others ask Redis at most every 100 ms, from the path of an
/// ordinary `acquire` (one small script call per 100 ms per worker, not one
/// per message), so they stop within that poll plus the calls they already
/// had on the wire.
#[derive(Debug)]
pub struct RedisBackOff {
    backend: RedisBackend,
    key: String,
    pause: Pause,
    /// When Redis is to be asked next, in [`now_ms`] time.
    next_poll_ms: AtomicU64,
}

impl RedisBackOff {
    /// The shared back-off of the endpoint `endpoint` (the name a
    /// [`RedisLimiter`] of the same endpoint would use).
    pub fn new(backend: &RedisBackend, endpoint: &str) -> Self {
        RedisBackOff {
            backend: backend.clone(),
            key: backend.own_slot_key("limit", endpoint),
            pause: Pause::default(),
            next_poll_ms: AtomicU64::new(0),
        }
    }

    /// The Redis key holding this endpoint's state.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Learns another worker's back-off from Redis.
    async fn poll(&self) -> Result<()> {
        let op = "back-off poll";
        let invocation = args::keyed(&args::GcraPause {}, &[&self.key]);
        let reply = self.backend.inner.conns.invoke(op, &invocation).await?;
        let [now, pause] = codec::array(op, &reply)? else {
            return Err(codec::unexpected(op, &reply));
        };
        let (now_us, pause_us) = (codec::uint(op, now)?, codec::uint(op, pause)?);
        if pause_us > now_us {
            // Server time to our clock: what is left of the pause.
            self.pause
                .until(now_ms().saturating_add((pause_us - now_us) / 1_000));
        }
        Ok(())
    }
}

#[async_trait]
impl Limiter for RedisBackOff {
    async fn acquire(&self, _n: u32) -> Result<()> {
        let now = now_ms();
        let due = self.next_poll_ms.load(Ordering::Acquire);
        let poll_ms = BACK_OFF_POLL.as_millis() as u64;
        // One caller per interval asks; the others go on with what is known.
        if now >= due
            && self
                .next_poll_ms
                .compare_exchange(
                    due,
                    now.saturating_add(poll_ms),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            if let Err(e) = self.poll().await {
                // The back-off is a courtesy to the endpoint: a Redis that
                // does not answer must not stop delivery (settling needs it
                // anyway, and reports its own errors).
                tracing::debug!(error = %e, "cannot read the shared back-off");
            }
        }
        self.pause.wait().await;
        Ok(())
    }

    async fn back_off(&self, until_ms: u64) -> Result<()> {
        self.pause.until(until_ms);
        store_back_off(&self.backend, &self.key, until_ms).await
    }
}
