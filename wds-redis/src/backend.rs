//! [`RedisBackend`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{cmd, Value};
use wds_core::{Error, Result};

use crate::codec;
use crate::conn::{redact, Conns};
use crate::scripts::{Invocation, Lua};

/// Messages per batch when due retries and replayed dead letters are
/// gathered into new batches.
pub(crate) const REBATCH_SIZE: usize = 100;
/// Most due retries one `lease` call moves to ready, to keep each script short.
pub(crate) const MAX_DUE_PER_LEASE: usize = 1_000;

/// A [`wds_core::backend::Queue`] and [`wds_core::backend::OffsetStore`] in Redis, for many
/// workers on many machines.
///
/// Every trait call is one round trip: one `EVALSHA` of a Lua script that
/// applies the whole operation atomically (see the crate docs for the key
/// layout). Clones share one connection pool; give one clone to each
/// component, as with `wds_memory::MemoryBackend`.
///
/// ```no_run
/// # async fn demo(sink: impl wds_core::Sink) -> wds_core::Result<()> {
/// use wds_redis::RedisBackend;
///
/// let backend = RedisBackend::builder("redis://127.0.0.1:6379/0")
///     .prefix("alerts")
///     .connect()
///     .await?;
/// let engine = wds_core::Engine::builder().backend(backend).sink(sink).build()?;
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) conns: Conns,
    /// `{prefix}`: the hash tag every key starts with (`KEYS[1]` of every script).
    pub(crate) tag: String,
    pub(crate) retention: Duration,
    /// How long a worker that stopped beating is kept.
    pub(crate) worker_retention: Duration,
    /// Rejects, and dead letters, of a job kept in detail.
    pub(crate) detail_limit: usize,
    url: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &redact(&self.inner.url))
            .field("keys", &self.inner.tag)
            .field("retention", &self.inner.retention)
            .field("conns", &self.inner.conns)
            .finish()
    }
}

impl RedisBackend {
    /// Starts configuring a backend for the Redis at `url`
    /// (`redis://[:password@]host[:port][/db]`, or `rediss://` with the `tls`
    /// feature).
    pub fn builder(url: impl Into<String>) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.into(),
            prefix: "wds".into(),
            pool_size: 1,
            command_timeout: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            detail_limit: codec::DETAIL_LIMIT,
            worker_retention: wds_core::backend::WORKER_RETENTION,
        }
    }

    /// The key prefix with its hash tag, e.g. `{wds}`: every key of this
    /// deployment starts with it.
    pub fn key_prefix(&self) -> &str {
        &self.inner.tag
    }

    /// A call of one of our scripts, with the key tag as `KEYS[1]`.
    pub(crate) fn invocation(&self, lua: &'static Lua) -> Invocation {
        lua.invocation(&[&self.inner.tag])
    }

    /// Runs a script call made by [`RedisBackend::invocation`].
    pub(crate) async fn run(&self, op: &'static str, invocation: &Invocation) -> Result<Value> {
        self.inner.conns.invoke(op, invocation).await
    }

    /// The name of a key of this deployment.
    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.tag)
    }

    /// Asks Redis for `PING`, to check that it answers.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when Redis cannot be reached in time.
    pub async fn ping(&self) -> Result<()> {
        match self.inner.conns.query("ping", &cmd("PING")).await? {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            Value::Okay => Ok(()),
            other => Err(crate::codec::unexpected("ping", &other)),
        }
    }
}

/// Configures and connects a [`RedisBackend`]; made by [`RedisBackend::builder`].
pub struct RedisBackendBuilder {
    url: String,
    prefix: String,
    pool_size: usize,
    command_timeout: Duration,
    retention: Duration,
    detail_limit: usize,
    worker_retention: Duration,
}

impl std::fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("retention", &self.retention)
            .field("detail_limit", &self.detail_limit)
            .field("worker_retention", &self.worker_retention)
            .finish()
    }
}

impl RedisBackendBuilder {
    /// The key prefix (default `wds`). Deployments with different prefixes
    /// share one Redis without seeing each other. Every key is
    /// `{prefix}:…`, one hash tag, so the scripts also run on Redis Cluster.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many multiplexed connections to spread calls over (default 1).
    /// Each one carries any number of concurrent calls, and calls made at
    /// the same moment share its writes and reads: in `redis_bench` one
    /// connection cost less CPU per message, on both sides, than four.
    /// Redis runs one script at a time whatever the number of connections.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// The timeout of every Redis call, including getting a connection
    /// (default 5 s). A call that times out fails with the retryable
    /// [`Error::Unavailable`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long a finished job's per-line outcomes and rejects are kept
    /// (default 7 days). Its report, counts and dead letters stay.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How many rejects, and how many dead letters, of a job are kept in detail (default
    /// 1,000): their reasons, and the line a duplicate repeats. Past it a
    /// line keeps its kind, a dead letter its message and the kind of its
    /// failure; the counts stay exact. Fixed for a job when it is claimed.
    pub fn detail_limit(mut self, limit: usize) -> Self {
        self.detail_limit = limit;
        self
    }

    /// How long a worker that stopped beating stays listed by
    /// [`wds_core::backend::WorkerRegistry::workers`] (default
    /// [`wds_core::backend::WORKER_RETENTION`]); every call drops those
    /// past it.
    pub fn worker_retention(mut self, retention: Duration) -> Self {
        self.worker_retention = retention;
        self
    }

    /// Connects and checks that Redis answers.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL or prefix, a `rediss://` URL
    /// without the `tls` feature, or a zero timeout; [`Error::Unavailable`]
    /// when the server cannot be reached (or refuses our password) within
    /// the command timeout.
    pub async fn connect(self) -> Result<RedisBackend> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "the Redis key prefix must be non-empty and without braces, got {:?}",
                self.prefix
            )));
        }
        if self.command_timeout.is_zero() {
            return Err(Error::Config(
                "the Redis command timeout must be positive".into(),
            ));
        }
        #[cfg(feature = "tls")]
        {
            // redis-rs uses rustls without choosing a crypto provider; pick
            // ring unless the application installed one already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let conns = Conns::new(&self.url, self.pool_size, self.command_timeout)?;
        let backend = RedisBackend {
            inner: Arc::new(Inner {
                conns,
                tag: format!("{{{}}}", self.prefix),
                retention: self.retention,
                detail_limit: self.detail_limit,
                worker_retention: self.worker_retention,
                url: self.url,
            }),
        };
        backend.ping().await.map_err(|e| match e {
            Error::Unavailable { source, .. } => Error::Unavailable {
                op: "connect",
                source: format!(
                    "cannot reach Redis at {}: {source}",
                    redact(&backend.inner.url)
                )
                .into(),
            },
            other => other,
        })?;
        Ok(backend)
    }
}
