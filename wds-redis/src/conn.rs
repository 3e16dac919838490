//! Connections: a deadpool-redis pool to one server, or one cluster
//! connection to a Redis Cluster, every call under a timeout, and Redis
//! failures mapped to [`wds_core::Error`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;

use deadpool_redis::cluster::{ClusterClient, ClusterConnection};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster_routing::{
    Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
};
use deadpool_redis::redis::{
    cmd, Arg, AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture,
    ServerErrorKind, Value,
};
use deadpool_redis::{Connection, Manager, Pool, Runtime};
use wds_core::{Error, Result};

use crate::scripts::Invocation;

/// The connections of a backend: to one server, or to a Redis Cluster.
pub(crate) struct Conns {
    target: Target,
    timeout: Duration,
    /// The URL without its password, for errors.
    shown: String,
}

enum Target {
    /// One server (or a proxy in front of several).
    Single(Single),
    /// A Redis Cluster, reached through its seed nodes.
    Cluster(Box<Cluster>),
}

/// A pool of multiplexed connections to one server, used round-robin.
///
/// deadpool-redis creates and health-checks the connections. Each one is
/// then kept checked out in a slot and shared by concurrent calls (a
/// `MultiplexedConnection` pipelines any number of requests), because
/// checking a connection out per call costs deadpool's recycle check, an
/// `UNWATCH` + `PING` round trip, which would double the round trips of
/// every queue operation. A slot whose connection failed is emptied and
/// refilled from the pool on its next use, so a Redis restart heals itself.
struct Single {
    pool: Pool,
    slots: Box<[Mutex<Option<Connection>>]>,
    next: AtomicUsize,
}

/// A Redis Cluster: one cluster connection (redis-rs keeps one multiplexed
/// connection per node under it), which routes each script by its first
/// key's slot, follows `MOVED` and `ASK`, and re-reads the slot map after
/// a failover. Made on first use, and again after it failed at the
/// connection level.
struct Cluster {
    client: ClusterClient,
    seeds: Vec<String>,
    conn: Mutex<Option<ClusterConnection>>,
}

/// A connection of either kind, for one call.
pub(crate) enum AnyConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AnyConnection::Single(c) => c.req_packed_command(cmd),
            AnyConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AnyConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConnection::Single(c) => c.get_db(),
            AnyConnection::Cluster(c) => c.get_db(),
        }
    }
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Conns");
        match &self.target {
            Target::Single(single) => d
                .field("status", &single.pool.status())
                .field("slots", &single.slots.len()),
            Target::Cluster(cluster) => d.field(
                "cluster",
                &cluster.seeds.iter().map(|s| redact(s)).collect::<Vec<_>>(),
            ),
        };
        d.field("timeout", &self.timeout).finish()
    }
}

/// The seed nodes of a Redis Cluster URL, or `None` for one server.
///
/// A cluster is named either by `redis+cluster://` (or `rediss+cluster://`)
/// with one or more `host:port` separated by commas, credentials given once
/// before them (`redis+cluster://user:pw@h1:7000,h2:7001`), or by a list of
/// full URLs separated by commas (`redis://h1:7000,redis://h2:7001`).
pub(crate) fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let url = url.trim();
    let plus = [
        ("redis+cluster://", "redis"),
        ("rediss+cluster://", "rediss"),
    ]
    .into_iter()
    .find_map(|(prefix, scheme)| Some((url.strip_prefix(prefix)?, scheme)));
    if let Some((rest, scheme)) = plus {
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
            None => (String::new(), authority),
        };
        return Some(
            hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{scheme}://{userinfo}{h}"))
                .collect(),
        );
    }
    url.contains(',').then(|| {
        url.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    })
}

impl Conns {
    /// Connections to `url` (one server, or a cluster: see
    /// [`cluster_seeds`]); connects lazily.
    pub(crate) fn new(url: &str, size: usize, timeout: Duration) -> Result<Self> {
        let target = match cluster_seeds(url) {
            Some(seeds) => Target::Cluster(Box::new(Cluster::new(seeds, timeout)?)),
            None => Target::Single(Single::new(url, size, timeout)?),
        };
        Ok(Conns {
            target,
            timeout,
            shown: redact(url),
        })
    }

    /// Whether this is a Redis Cluster's connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }
    /// Maps a Redis failure (see [`map_error`]); a one-server connection
    /// told `MOVED` or `ASK` was pointed at one node of a cluster, which
    /// no retry fixes: that is a configuration error saying what to write.
    fn map_error(&self, op: &'static str, e: RedisError) -> Error {
        let redirected = matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
        );
        if redirected && !self.is_cluster() {
            return Error::config(
                "url",
                format!(
                    "Redis at {} is a node of a Redis Cluster (it answered {op} with `{e}`): \
                 name the cluster's nodes, as redis+cluster://host:port,host:port",
                    self.shown
                ),
            );
        }
        map_error(op, e)
    }

    /// A connection for the call numbered `n`.
    async fn connection(&self, n: usize) -> Result<AnyConnection, RedisError> {
        match &self.target {
            Target::Single(single) => single.connection(n).await.map(AnyConnection::Single),
            Target::Cluster(cluster) => cluster.connection().await.map(AnyConnection::Cluster),
        }
    }

    /// Drops the connection that call `n` used after a connection-level
    /// failure, so that the next call makes a fresh one.
    async fn forget(&self, n: usize) {
        match &self.target {
            Target::Single(single) => single.forget(n).await,
            Target::Cluster(cluster) => cluster.forget().await,
        }
    }

    /// Runs a script: one `EVALSHA`, and on `NOSCRIPT` (a server that has
    /// not seen it, restarted, or a replica just promoted) one `EVAL` of
    /// its code with the same keys and arguments, which also caches it
    /// there. `EVAL` goes where the keys live, so this works the same on a
    /// cluster, unlike a `SCRIPT LOAD` that has no key to route by.
    pub(crate) async fn invoke(&self, op: &'static str, invocation: &Invocation) -> Result<Value> {
        self.call(op, |mut conn| async move {
            run_script(&mut conn, invocation).await
        })
        .await
    }

    /// Runs a script as [`Conns::invoke`], then `WAIT replicas timeout`
    /// on the same connection to the node that ran it (the one serving
    /// `key`'s slot, in a cluster): the reply, and how many replicas
    /// acknowledged every write of that connection so far, the script's
    /// included.
    pub(crate) async fn invoke_replicated(
        &self,
        op: &'static str,
        invocation: &Invocation,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> Result<(Value, i64)> {
        let mut wait = cmd("WAIT");
        wait.arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let reply = self
            .call(op, |mut conn| async move {
                let reply = run_script(&mut conn, invocation).await?;
                let acked = match &mut conn {
                    AnyConnection::Single(c) => wait.query_async::<Value>(c).await?,
                    AnyConnection::Cluster(c) => {
                        let node = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                        c.route_command(
                            wait,
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(node)),
                        )
                        .await?
                    }
                };
                Ok(Value::Array(vec![reply, acked]))
            })
            .await?;
        match reply {
            Value::Array(mut pair) if pair.len() == 2 => {
                let acked = match pair.pop() {
                    Some(Value::Int(n)) => n,
                    _ => 0,
                };
                let reply = pair.pop().unwrap_or(Value::Nil);
                Ok((reply, acked))
            }
            other => Ok((other, 0)),
        }
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
        F: FnOnce(AnyConnection) -> Fut,
        Fut: std::future::Future<Output = Result<Value, RedisError>>,
    {
        let slot = match &self.target {
            Target::Single(single) => single.next.fetch_add(1, Ordering::Relaxed),
            Target::Cluster(_) => 0,
        };
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
                Err(self.map_error(op, e))
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

impl Single {
    fn new(url: &str, size: usize, timeout: Duration) -> Result<Self> {
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
        Ok(Single {
            pool,
            slots: (0..size).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// The connection of slot `n % slots`, filling the slot from the pool
    /// if needed.
    async fn connection(&self, n: usize) -> Result<MultiplexedConnection, RedisError> {
        // Held while filling, so that concurrent callers wait for one
        // connection instead of each taking one from the pool.
        let mut guard = self.slots[n % self.slots.len()].lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(MultiplexedConnection::clone(conn));
        }
        let pooled = self.pool.get().await.map_err(pool_error)?;
        let conn = MultiplexedConnection::clone(&pooled);
        *guard = Some(pooled);
        Ok(conn)
    }

    async fn forget(&self, n: usize) {
        if let Some(conn) = self.slots[n % self.slots.len()].lock().await.take() {
            // Detached rather than returned: it is broken, no use recycling it.
            drop(Connection::take(conn));
        }
    }
}

impl Cluster {
    fn new(seeds: Vec<String>, timeout: Duration) -> Result<Self> {
        if seeds.is_empty() {
            return Err(Error::config(
                "url",
                "a Redis Cluster URL names no node (redis+cluster://host:port,host:port)",
            ));
        }
        let client = ClusterClient::builder(seeds.iter().map(String::as_str))
            .connection_timeout(timeout)
            // As for one server, the per-call timeout is ours; redis-rs
            // retries MOVED, ASK, TRYAGAIN and lost nodes within it.
            .response_timeout(timeout)
            .build()
            .map_err(|e| {
                Error::config(
                    "url",
                    format!(
                        "invalid Redis Cluster nodes {}: {e}{}",
                        seeds
                            .iter()
                            .map(|s| redact(s))
                            .collect::<Vec<_>>()
                            .join(","),
                        tls_hint(&e)
                    ),
                )
            })?;
        Ok(Cluster {
            client,
            seeds,
            conn: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ClusterConnection, RedisError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.client.get_async_connection().await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn forget(&self) {
        self.conn.lock().await.take();
    }
}

/// One `EVALSHA`, or an `EVAL` of the code on `NOSCRIPT` (see
/// [`Conns::invoke`]).
async fn run_script(
    conn: &mut AnyConnection,
    invocation: &Invocation,
) -> Result<Value, RedisError> {
    match invocation.call.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            let mut eval = cmd("EVAL");
            eval.arg(invocation.lua.code);
            // After `EVALSHA <sha1>`: the key count, keys, arguments.
            for arg in invocation.call.args_iter().skip(2) {
                if let Arg::Simple(bytes) = arg {
                    eval.arg(bytes);
                }
            }
            eval.query_async(conn).await
        }
        reply => reply,
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

/// The URL without its password, for messages and `Debug`; each URL of a
/// comma-separated list of cluster nodes too.
pub(crate) fn redact(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
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
    use super::{cluster_seeds, redact};

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
        assert_eq!(
            redact("redis+cluster://u:pw@h1:7000,h2:7001"),
            "redis+cluster://u:***@h1:7000,h2:7001"
        );
        assert_eq!(
            redact("redis://:a@h1:7000,redis://:b@h2:7001/0"),
            "redis://:***@h1:7000,redis://:***@h2:7001/0"
        );
    }

    #[test]
    fn cluster_urls_name_their_seeds() {
        assert_eq!(cluster_seeds("redis://h:6379/0"), None);
        assert_eq!(
            cluster_seeds("redis+cluster://h1:7000,h2:7001"),
            Some(vec!["redis://h1:7000".into(), "redis://h2:7001".into()])
        );
        assert_eq!(
            cluster_seeds("rediss+cluster://u:pw@h1:7000, h2:7001/"),
            Some(vec![
                "rediss://u:pw@h1:7000".into(),
                "rediss://u:pw@h2:7001".into()
            ])
        );
        assert_eq!(
            cluster_seeds("redis://h1:7000,redis://h2:7001"),
            Some(vec!["redis://h1:7000".into(), "redis://h2:7001".into()])
        );
        assert_eq!(cluster_seeds("redis+cluster://"), Some(vec![]));
    }
}
