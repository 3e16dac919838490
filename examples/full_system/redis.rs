//! The Redis backend for the distributed roles.

use std::sync::Arc;

use wds_http::redact_url as redact;
use wds_redis::{RedisBackOff, RedisBackend, RedisLimiter};

use crate::roles::{Backend, Fallible};
use crate::settings::Settings;

/// Connects to Redis (failing with one clear line when it cannot), with a
/// limiter shared by every worker of this deployment: the rate when one is
/// set, and the 429 back-off always.
pub(crate) async fn connect(url: &str, settings: &Settings) -> Fallible<Backend> {
    let mut builder = RedisBackend::builder(url)
        .prefix(settings.redis_prefix.clone())
        .detail_limit(settings.detail_limit);
    if let Some(shards) = settings.redis_shards {
        builder = builder.shards(shards);
    }
    let backend = builder
        .connect()
        .await
        .map_err(|e| format!("redis {}: {e}", redact(url)))?;
    tracing::info!(
        keys = backend.key_prefix(),
        shards = backend.shards(),
        "connected to Redis"
    );
    let endpoint = settings
        .webhook_url
        .clone()
        .unwrap_or_else(|| format!("http://{}/webhook", settings.notifier_listen));
    // The endpoint names a Redis key: never with its password or query.
    let endpoint = redact(&endpoint);
    // With a rate, a limit shared by every worker; without one, the 429
    // back-off is still shared: one worker's 429 pauses all of them.
    let limiter: Arc<dyn wds_core::limiter::Limiter> = match settings.rate {
        Some(rate) => Arc::new(
            RedisLimiter::new(&backend, &endpoint, rate, settings.burst.max(1))
                .map_err(|e| format!("rate limiter: {e}"))?,
        ),
        None => Arc::new(RedisBackOff::new(&backend, &endpoint)),
    };
    let limiter = Some(limiter);
    Ok(Backend {
        store: Arc::new(backend.clone()),
        queue: Arc::new(backend.clone()),
        offsets: Arc::new(backend.clone()),
        control: Arc::new(backend.clone()),
        circuits: Arc::new(backend.clone()),
        workers: Arc::new(backend),
        limiter,
        name: "redis",
    })
}
