//! Retrying backend calls that failed transiently.

use std::future::Future;
use std::time::Duration;

use crate::error::Result;

/// Calls `f` until it succeeds or fails with a non-retryable error, sleeping
/// with capped exponential backoff between tries. A backend outage is waited
/// out, never fatal: the caller decides when to give up by dropping the future.
pub(crate) async fn with_backoff<T, F, Fut>(op: &'static str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    let mut failures = 0u32;
    loop {
        match f().await {
            Err(e) if e.is_retryable() => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(op, failures, error = %e, "backend call failed; retrying");
                }
                let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 2));
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => {
                if failures > 0 {
                    tracing::info!(op, failures, "backend call recovered");
                }
                return other;
            }
        }
    }
}
