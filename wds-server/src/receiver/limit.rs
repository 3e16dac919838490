//! The receiver's rate limiter: a governor GCRA bucket per (client address,
//! path), answering 429 with `Retry-After` when a client goes too fast.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::routes::json_error;

type Key = (IpAddr, String);

/// A keyed limiter shared by every request of one receiver.
#[derive(Debug)]
pub(crate) struct Limiter {
    limiter: DefaultKeyedRateLimiter<Key>,
}

impl Limiter {
    /// `per_second` sustained, `burst` at once, for each key.
    pub(crate) fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Limiter {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// `Ok` when the request may go on, else how long until it could.
    fn check(&self, key: &Key) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets keys whose buckets are full again, so that a stream of new
    /// client addresses cannot grow the map forever.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Middleware: lets the request through or answers 429.
///
/// The client address comes from axum's `ConnectInfo`; a router served
/// without it (see [`crate::Receiver::router`]) puts every client in one
/// bucket rather than failing.
pub(crate) async fn limit(
    State(limiter): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let key = (ip, request.uri().path().to_owned());
    match limiter.check(&key) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            // Whole seconds, rounded up and at least 1: "0" would invite an
            // immediate retry that is refused again.
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            let mut response =
                json_error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded").into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
    }
}
