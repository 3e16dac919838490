//! Connections: a deadpool-redis pool, every call under a timeout, and
//! Redis failures mapped to [`wds_core::Error`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{
    cmd, AsyncConnectionConfig, Cmd, ErrorKind, RedisError, ServerErrorKind, Value,
};
use deadpool_redis::{Connection, Manager, Pool, Runtime};
use wds_core::{Error, Result};

use crate::scripts::Invocation;

/// A pool of multiplexed connections, used round-robin.
///
/// deadpool-redis creates and health-checks the connections. Each one is
/// then kept checked out in a slot and shared by concurrent calls (a
/// `MultiplexedConnection` pipelines any number of requests), because
/// checking a connection out per call costs deadpool's recycle check, an
/// `UNWATCH` + `PING` round trip, which would double the round trips of
/// every queue operation. A slot whose connection failed is emptied and
/// refilled from the pool on its next use, so a Redis restart heals itself.
pub(crate) struct Conns {
    pool: Pool,
    slots: Box<[Mutex<Option<Connection>>]>,
    next: AtomicUsize,
    timeout: Duration,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("status", &self.pool.status())
            .field("slots", &self.slots.len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Conns {
    /// Pools connections to `url`; connects lazily.
    pub(crate) fn new(url: &str, size: usize, timeout: Duration) -> Result<Self> {
        // The per-call timeout is ours (it covers getting a connection too);
        // redis-rs's own 500 ms response timeout would cut long scripts short.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        let manager = Manager::new_with_config(url, config).map_err(|e| {
            Error::config(
                "url",
                format!("invalid Redis URL {}: {e}{}", redact(url), tls_hint(&e)),
            )
        })?;
        let size = size.max(1);
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Backend {
                op: "connect",
                reason: "cannot build the Redis connection pool".into(),
                source: Some(e.into()),
            })?;
        Ok(Conns {
            pool,
            slots: (0..size).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// A connection of the slot, filling the slot from the pool if needed.
    async fn connection(&self, slot: usize) -> Result<MultiplexedConnection, RedisError> {
        // Held while filling, so that concurrent callers wait for one
        // connection instead of each taking one from the pool.
        let mut guard = self.slots[slot].lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(MultiplexedConnection::clone(conn));
        }
        let pooled = self.pool.get().await.map_err(pool_error)?;
        let conn = MultiplexedConnection::clone(&pooled);
        *guard = Some(pooled);
        Ok(conn)
    }

    /// Drops a slot's connection after a connection-level failure, so that
    /// the next call there gets a fresh one.
    async fn forget(&self, slot: usize) {
        if let Some(conn) = self.slots[slot].lock().await.take() {
            // Detached rather than returned: it is broken, no use recycling it.
            drop(Connection::take(conn));
        }
    }

    /// Runs a script (one `EVALSHA`, loading it on `NOSCRIPT`).
    pub(crate) async fn invoke(&self, op: &'static str, invocation: &Invocation) -> Result<Value> {
        self.call(op, |mut conn| async move {
            match invocation.call.query_async(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(invocation.lua.code)
                        .query_async::<()>(&mut conn)
                        .await?;
                    invocation.call.query_async(&mut conn).await
                }
                reply => reply,
            }
        })
        .await
    }

    /// Runs one command.
    pub(crate) async fn query(&self, op: &'static str, cmd: &Cmd) -> Result<Value> {
        self.call(
            op,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    async fn call<F, Fut>(&self, op: &'static str, f: F) -> Result<Value>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<Value, RedisError>>,
    {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let run = async {
            let conn = self.connection(slot).await?;
            f(conn).await
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if breaks_connection(&e) {
                    self.forget(slot).await;
                }
                Err(map_error(op, e))
            }
            Err(_) => {
                // The connection may be wedged (e.g. a half-open socket).
                self.forget(slot).await;
                Err(Error::unavailable(
                    op,
                    format!("Redis did not answer within {:?}", self.timeout),
                ))
            }
        }
    }
}

/// Whether the connection that produced `e` should be thrown away.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Maps a Redis failure: anything that may pass (a lost connection, a
/// restart still loading its data, a busy server, a failover) is
/// retryable [`Error::Unavailable`]; a script or protocol error is a bug and
/// is not.
pub(crate) fn map_error(op: &'static str, e: RedisError) -> Error {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::CrossSlot)
        | ErrorKind::Parse
        | ErrorKind::UnexpectedReturnType => Error::Corrupt {
            key: op.to_string(),
            detail: format!("Redis refused the call: {e}"),
        },
        _ => Error::unavailable(op, e),
    }
}

/// Makes a pool failure look like the Redis failure behind it.
fn pool_error(e: deadpool_redis::PoolError) -> RedisError {
    match e {
        deadpool_redis::PoolError::Backend(e) => e,
        other => RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no Redis connection: {other}"),
        )),
    }
}

/// Says how to enable TLS when a `rediss://` URL was refused for lack of it.
fn tls_hint(e: &RedisError) -> &'static str {
    if cfg!(feature = "tls") || !e.to_string().to_ascii_lowercase().contains("tls") {
        ""
    } else {
        " (enable the `tls` feature of wds-redis for rediss:// URLs)"
    }
}

/// The URL without its password, for messages and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://:secret@localhost:6379/2"),
            "redis://:***@localhost:6379/2"
        );
        assert_eq!(
            redact("rediss://user:pw@host/0"),
            "rediss://user:***@host/0"
        );
        assert_eq!(redact("redis://host:1/3"), "redis://host:1/3");
        assert_eq!(redact("not a url"), "not a url");
    }
}
