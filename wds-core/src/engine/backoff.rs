//! Retrying backend calls that failed transiently.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// How long calls are still retried after `cancel` fired: enough to ride
/// out a blip while finishing what is in flight, short enough that a
/// shutdown with the backend down ends in bounded time.
const GRACE_AFTER_CANCEL: Duration = Duration::from_secs(3);

/// Calls `f` until it succeeds or fails with a non-retryable error, sleeping
/// with capped exponential backoff between tries. A backend outage is waited
/// out, never fatal, until `cancel` fires: from then on it is retried for a
/// short grace time only, then its last error is returned.
pub(crate) async fn with_backoff<T, F, Fut>(
    op: &'static str,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    let mut failures = 0u32;
    let mut give_up_at: Option<Instant> = None;
    loop {
        match f().await {
            Err(e) if e.is_retryable() => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(op, failures, error = %e, "backend call failed; retrying");
                }
                if cancel.is_cancelled() {
                    let at = *give_up_at.get_or_insert_with(|| Instant::now() + GRACE_AFTER_CANCEL);
                    if Instant::now() >= at {
                        tracing::warn!(op, failures, error = %e, "shutting down: backend call abandoned");
                        return Err(e);
                    }
                }
                let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 2));
                let pause = delay + jitter;
                match give_up_at {
                    Some(at) => tokio::time::sleep_until((Instant::now() + pause).min(at)).await,
                    None => {
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = cancel.cancelled() => {}
                        }
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_until_cancel_then_for_the_grace_only() {
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let down = || async { Err::<(), _>(Error::unavailable("test", "down")) };
        let outage = tokio::spawn({
            let cancel = cancel.clone();
            async move { with_backoff("test", &cancel, down).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!outage.is_finished(), "an outage is waited out");
        cancel.cancel();
        let result = outage.await.unwrap();
        assert!(result.is_err());
        let took = Instant::now() - started;
        assert!(
            took <= Duration::from_secs(60) + GRACE_AFTER_CANCEL + Duration::from_millis(100),
            "{took:?}"
        );
    }
}
