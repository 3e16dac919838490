//! Retry policy: exponential backoff with jitter, bounded by attempts and age.

use std::time::Duration;

/// When to try a failed message again, and when to give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all (the first included) before a message is dead as
    /// `exhausted`. Default 5.
    pub max_attempts: u32,
    /// How long after its first attempt a message may still be retried.
    /// Default 1 hour.
    pub max_age: Duration,
    /// Delay before the second attempt. Default 500 ms.
    pub base_delay: Duration,
    /// Largest delay between two attempts. Default 60 s.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay after the `failed`-th failed attempt (1-based), or `None` when
    /// the message must be given up. `retry_after` (from a 429) is a floor,
    /// itself capped at `max_delay`: the endpoint cannot push a retry further
    /// out than the policy allows (see [`RetryPolicy::cap_retry_after`]).
    ///
    /// The delay is `base * 2^(failed-1)`, capped at `max_delay`, with "equal
    /// jitter" (half fixed, half random) so that workers that failed together
    /// do not retry together.
    pub fn next_delay(
        &self,
        failed: u32,
        age: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failed.saturating_sub(1).min(20))
            .min(self.max_delay);
        let half = exp / 2;
        let jitter = Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64));
        let floor = retry_after.map_or(Duration::ZERO, |after| after.min(self.max_delay));
        let delay = (half + jitter).max(floor);
        if age.saturating_add(delay) > self.max_age {
            return None;
        }
        Some(delay)
    }

    /// How long a 429's `Retry-After` may pause deliveries for a message
    /// that has been trying for `age`: at most `max_delay`, and never past the
    /// message's `max_age`. An endpoint that asks for a year (or for
    /// `u64::MAX` seconds) gets `max_delay`.
    pub fn cap_retry_after(&self, retry_after: Duration, age: Duration) -> Duration {
        retry_after
            .min(self.max_delay)
            .min(self.max_age.saturating_sub(age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        for failed in 1..=4u32 {
            let full = Duration::from_millis(100 * (1 << (failed - 1)));
            for _ in 0..50 {
                let d = p.next_delay(failed, Duration::ZERO, None).unwrap();
                assert!(d >= full / 2 && d <= full, "attempt {failed}: {d:?}");
            }
        }
    }

    #[test]
    fn gives_up_after_max_attempts_or_age() {
        let p = RetryPolicy::default();
        assert!(p.next_delay(5, Duration::ZERO, None).is_none());
        assert!(p.next_delay(1, Duration::from_secs(3600), None).is_none());
    }

    #[test]
    fn retry_after_is_a_floor_and_delay_is_capped() {
        let p = RetryPolicy::default();
        let d = p
            .next_delay(1, Duration::ZERO, Some(Duration::from_secs(7)))
            .unwrap();
        assert!(d >= Duration::from_secs(7));
        let d = p.next_delay(4, Duration::ZERO, None).unwrap();
        assert!(d <= p.max_delay);
        let long = RetryPolicy {
            max_attempts: 100,
            ..p
        };
        assert!(long.next_delay(60, Duration::ZERO, None).unwrap() <= p.max_delay);
    }

    #[test]
    fn an_endless_retry_after_is_capped_without_overflow() {
        let p = RetryPolicy::default();
        let endless = Duration::from_secs(u64::MAX);
        let d = p.next_delay(1, Duration::ZERO, Some(endless)).unwrap();
        assert_eq!(d, p.max_delay);
        assert_eq!(p.cap_retry_after(endless, Duration::ZERO), p.max_delay);
        // Never past the message's max age.
        let old = p.max_age - Duration::from_secs(5);
        assert_eq!(p.cap_retry_after(endless, old), Duration::from_secs(5));
        assert_eq!(p.cap_retry_after(endless, Duration::MAX), Duration::ZERO);
        assert!(p.next_delay(1, Duration::MAX, Some(endless)).is_none());
    }
}
