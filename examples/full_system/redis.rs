//! The Redis backend for the distributed roles.

use std::sync::Arc;

use wds_http::redact_url as redact;
use wds_redis::{RedisBackend, RedisLimiter};

use crate::roles::{Backend, Fallible};
use crate::settings::Settings;

/// Connects to Redis (failing with one clear line when it cannot), with a
/// limiter shared by every worker of this deployment when a rate is set.
pub(crate) async fn connect(url: &str, settings: &Settings) -> Fallible<Backend> {
    let backend = RedisBackend::builder(url)
        .prefix(settings.redis_prefix.clone())
        .detail_limit(settings.detail_limit)
        .connect()
        .await
        .map_err(|e| format!("redis {}: {e}", redact(url)))?;
    let limiter = match settings.rate {
        Some(rate) => {
            let endpoint = settings
                .webhook_url
                .clone()
                .unwrap_or_else(|| format!("http://{}/webhook", settings.notifier_listen));
            // The endpoint names a Redis key: never with its password or query.
            let endpoint = redact(&endpoint);
            let limiter = RedisLimiter::new(&backend, &endpoint, rate, settings.burst.max(1))
                .map_err(|e| format!("rate limiter: {e}"))?;
            Some(Arc::new(limiter) as Arc<dyn wds_core::Limiter>)
        }
        None => None,
    };
    Ok(Backend {
        queue: Arc::new(backend.clone()),
        offsets: Arc::new(backend),
        limiter,
        name: "redis",
    })
}
