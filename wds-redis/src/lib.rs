//! # wds-redis
//!
//! The Redis backend of WDS: a [`Queue`](wds_core::Queue) and
//! [`OffsetStore`](wds_core::OffsetStore) that many workers on many machines
//! share ([`RedisBackend`]), and a rate limiter they share too
//! ([`RedisLimiter`]).
//!
//! ```no_run
//! # async fn demo(sink: impl wds_core::Sink) -> wds_core::Result<()> {
//! use std::sync::Arc;
//! use wds_redis::{RedisBackend, RedisLimiter};
//!
//! let backend = RedisBackend::builder("redis://127.0.0.1:6379/0").connect().await?;
//! let limiter = RedisLimiter::new(&backend, "alerts-api", 200, 20)?;
//! let engine = wds_core::Engine::builder()
//!     .backend(backend)
//!     .limiter(Arc::new(limiter))
//!     .sink(sink)
//!     .build()?;
//! # let _ = engine; Ok(()) }
//! ```
//!
//! # Round trips
//!
//! Every trait call is one round trip: one `EVALSHA` of a Lua script, loaded
//! once per server (and again after a restart, on `NOSCRIPT`). The script
//! applies the whole call atomically: a push appends its batch, records its
//! rejects and moves the checkpoint together; a lease reclaims expired
//! leases, promotes due retries and leases ready batches together; a settle
//! records every outcome of its batch together. `push_all` applies several
//! pushes in one call, and `settle_and_continue` settles a batch, marks the
//! next one and leases another in one call, so with batches of 100 a
//! message costs about 0.011 round trips (`redis_bench`).
//!
//! # Data
//!
//! Every key is `{prefix}:…` (one hash tag per deployment, so scripts are
//! valid on Redis Cluster and deployments with different prefixes share a
//! server). Lease deadlines and retry due times are compared with Redis
//! server time, so workers with skewed clocks agree. Memory stays bounded:
//! a batch is deleted when settled; a finished job's per-line outcomes and
//! rejects expire after [`retention`](RedisBackendBuilder::retention);
//! dead letters stay until replayed; a job's report (a small hash) and its
//! identity claim stay, so the same file is never a new job.
//!
//! # Failures
//!
//! Every call has a timeout ([`command_timeout`](RedisBackendBuilder::command_timeout)).
//! A lost connection, a timeout or a restarting Redis is
//! [`Error::Unavailable`](wds_core::Error::Unavailable), which the engine
//! retries with backoff; the broken connection is replaced on the next call.
//!
//! # Features
//!
//! - `tls`: `rediss://` URLs (rustls with ring and the platform's roots).
//! - `test-server`: [`RedisServer`], a private `redis-server` for tests.

mod backend;
mod circuits;
mod codec;
mod conn;
mod control;
mod limiter;
mod offsets;
mod queue;
mod scripts;
#[cfg(feature = "test-server")]
mod test_server;

pub use backend::{RedisBackend, RedisBackendBuilder};
pub use deadpool_redis;
pub use deadpool_redis::redis;
pub use limiter::{RedisBackOff, RedisLimiter};
#[cfg(feature = "test-server")]
pub use test_server::{RedisServer, RedisServerBuilder};
pub use wds_core;
