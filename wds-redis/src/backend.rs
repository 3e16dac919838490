//! [`RedisBackend`] and its builder.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{cmd, Value};
use wds_core::{Error, Result};

use crate::args::ScriptArgs;
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
    /// The hash tag of each key shard (`KEYS[1]` of every script on it):
    /// `{prefix}` for shard 0, `{prefix:shard:N}` for shard N (see
    /// [`RedisBackendBuilder::shards`]).
    pub(crate) tags: Vec<String>,
    /// The shard the next lease starts at, so that calls take turns.
    pub(crate) cursor: AtomicUsize,
    /// Per shard, until when (ms since the epoch) this process's leases
    /// pass it by: it had no work a moment ago (see
    /// [`RedisBackend::shard_is_idle`]).
    pub(crate) idle_until: Vec<AtomicU64>,
    pub(crate) retention: Duration,
    /// How long a worker that stopped beating is kept.
    pub(crate) worker_retention: Duration,
    /// Rejects, and dead letters, of a job kept in detail.
    pub(crate) detail_limit: usize,
    url: String,
    /// Marks waited for on replicas, if at all.
    wait: Option<Replicated>,
    /// Marks that fewer replicas than asked acknowledged in time.
    unreplicated: AtomicU64,
    /// When the last warning about them was logged (ms since the epoch).
    warned_ms: AtomicU64,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &redact(&self.inner.url))
            .field("keys", &self.inner.tags[0])
            .field("shards", &self.inner.tags.len())
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
            wait: None,
            shards: None,
        }
    }

    /// The key prefix with its hash tag, e.g. `{wds}`: the keys of shard 0
    /// start with it (of shard N, `{wds:shard:N}`; see
    /// [`RedisBackend::key_prefixes`]).
    pub fn key_prefix(&self) -> &str {
        &self.inner.tags[0]
    }

    /// Each key shard's prefix with its hash tag, shard 0 first: every key
    /// of this deployment's jobs starts with one of them.
    pub fn key_prefixes(&self) -> &[String] {
        &self.inner.tags
    }

    /// The prefix every key of `job` starts with: its shard's hash tag,
    /// e.g. `{wds:shard:5}` (so `{wds:shard:5}:job:<id>` is its hash).
    /// On a Redis Cluster, the master serving that tag's slot holds the
    /// job.
    pub fn job_key_prefix(&self, job: &wds_core::JobId) -> &str {
        &self.inner.tags[self.shard_of(job.as_str())]
    }

    /// How many key shards this deployment's jobs are spread over (see
    /// [`RedisBackendBuilder::shards`]).
    pub fn shards(&self) -> usize {
        self.inner.tags.len()
    }

    /// The shard that holds every key of `job`: a hash of its id (64-bit
    /// FNV-1a, which never changes: a job must stay where it was claimed)
    /// modulo the shard count.
    pub(crate) fn shard_of(&self, job: &str) -> usize {
        let n = self.inner.tags.len();
        if n == 1 {
            return 0;
        }
        let hash = job.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        (hash % n as u64) as usize
    }

    /// The shard a lease or batch id of ours came from, and the id as the
    /// scripts of that shard know it: ids from shard N > 0 end in `@N`
    /// (a script's ids end in digits after a `/` or `#`, so the suffix
    /// cannot be part of one), since shards count batches on their own.
    pub(crate) fn shard_of_id<'a>(&self, id: &'a str) -> (usize, &'a str) {
        let n = self.inner.tags.len();
        if n > 1 {
            if let Some((head, digits)) = id.rsplit_once('@') {
                let canonical =
                    !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit());
                match digits.parse::<usize>() {
                    Ok(shard) if canonical && shard < n => return (shard, head),
                    _ => {}
                }
            }
        }
        (0, id)
    }

    /// The id a script of `shard` gave, as the engine sees it (see
    /// [`RedisBackend::shard_of_id`]).
    pub(crate) fn id_from(shard: usize, id: String) -> String {
        if shard == 0 {
            id
        } else {
            format!("{id}@{shard}")
        }
    }

    /// Whether `shard` had no work for this process's last lease of it, a
    /// moment ago ([`IDLE_SHARD`]): with jobs on a few of many shards, the
    /// round of leases then asks only those, instead of every shard each
    /// time. A push of this process clears it; another process's push is
    /// seen by the first lease after the moment passes.
    pub(crate) fn shard_is_idle(&self, shard: usize) -> bool {
        self.inner.idle_until[shard].load(Ordering::Relaxed) > wds_core::backend::now_ms()
    }

    /// Notes whether `shard` just had work (see [`RedisBackend::shard_is_idle`]).
    pub(crate) fn note_work(&self, shard: usize, had_work: bool) {
        let until = if had_work {
            0
        } else {
            wds_core::backend::now_ms() + IDLE_SHARD.as_millis() as u64
        };
        self.inner.idle_until[shard].store(until, Ordering::Relaxed);
    }

    /// A call of one of our scripts on `shard`, its tag as `KEYS[1]`.
    pub(crate) fn invocation_on(&self, shard: usize, lua: &'static Lua) -> Invocation {
        lua.invocation(&[&self.inner.tags[shard]])
    }

    /// Runs the script of `args` on shard 0 (the deployment's own keys:
    /// workers, and every job when there is one shard).
    pub(crate) async fn call<A: ScriptArgs>(&self, op: &'static str, args: &A) -> Result<Value> {
        self.call_on(0, op, args).await
    }

    /// Runs the script of `args` on `shard`.
    pub(crate) async fn call_on<A: ScriptArgs>(
        &self,
        shard: usize,
        op: &'static str,
        args: &A,
    ) -> Result<Value> {
        self.run(op, &self.invocation_with(shard, args)).await
    }

    /// A call of the script of `args` on `shard`.
    pub(crate) fn invocation_with<A: ScriptArgs>(&self, shard: usize, args: &A) -> Invocation {
        let mut invocation = self.invocation_on(shard, A::lua());
        args.add_to(&mut invocation);
        invocation
    }

    /// Runs a script call made by [`RedisBackend::invocation_on`].
    pub(crate) async fn run(&self, op: &'static str, invocation: &Invocation) -> Result<Value> {
        self.inner.conns.invoke(op, invocation).await
    }

    /// Runs a script call that marks a batch as sending: with replicas
    /// waited for (see [`RedisBackendBuilder::wait_for_replicas`]), only
    /// answers once they acknowledged it or the wait timed out.
    pub(crate) async fn run_marking(
        &self,
        shard: usize,
        op: &'static str,
        invocation: &Invocation,
    ) -> Result<Value> {
        let Some(wait) = self.inner.wait else {
            return self.run(op, invocation).await;
        };
        let (reply, acked) = self
            .inner
            .conns
            .invoke_replicated(
                op,
                invocation,
                &self.inner.tags[shard],
                wait.replicas,
                wait.timeout,
            )
            .await?;
        if acked < i64::from(wait.replicas) {
            let total = self.inner.unreplicated.fetch_add(1, Ordering::Relaxed) + 1;
            let now = wds_core::backend::now_ms();
            let last = self.inner.warned_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 10_000
                && self
                    .inner
                    .warned_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    acked,
                    wanted = wait.replicas,
                    timeout = ?wait.timeout,
                    total,
                    "a batch marked as sending was not acknowledged by enough replicas in time; \
                     sending it anyway: a failover now could send it twice"
                );
            }
        }
        Ok(reply)
    }

    /// Marks that fewer replicas acknowledged in time than
    /// [`RedisBackendBuilder::wait_for_replicas`] asked for, since connect.
    pub fn unreplicated_marks(&self) -> u64 {
        self.inner.unreplicated.load(Ordering::Relaxed)
    }

    /// Whether marks wait for replicas, and for how many (0: they do not).
    pub fn replicas_waited_for(&self) -> u32 {
        self.inner.wait.map_or(0, |w| w.replicas)
    }

    /// Whether any node of the cluster is a live replica (`CLUSTER NODES`).
    async fn cluster_has_replicas(&self) -> Result<bool> {
        let nodes = match self
            .inner
            .conns
            .query("cluster nodes", cmd("CLUSTER").arg("NODES"))
            .await?
        {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::VerbatimString { text, .. } => text,
            other => return Err(crate::codec::unexpected("cluster nodes", &other)),
        };
        Ok(nodes.lines().any(|line| {
            let flags = line.split_whitespace().nth(2).unwrap_or_default();
            flags.contains("slave") && !flags.contains("fail")
        }))
    }

    /// The key of a `kind` of state shared by every worker for one
    /// `name` (an endpoint's limiter or circuit), under a hash tag of its
    /// own, `{prefix:kind:name}`: on a Redis Cluster each endpoint's state
    /// may live on another shard than the queue's, and the queue's shard
    /// does not also serve every worker's limiter calls.
    pub(crate) fn own_slot_key(&self, kind: &str, name: &str) -> String {
        let tag = &self.inner.tags[0];
        let prefix = &tag[1..tag.len() - 1];
        format!("{{{prefix}:{kind}:{name}}}")
    }

    /// The deployment's key shard count: the stored one (refusing a
    /// configured one that differs), else `configured` or the default,
    /// stored for every later process (`SET NX`, so two first processes
    /// agree on one).
    async fn agree_on_shards(&self, configured: Option<usize>) -> Result<usize> {
        let key = format!("{}:shards", self.inner.tags[0]);
        let default = if self.inner.conns.is_cluster() {
            CLUSTER_SHARDS
        } else {
            1
        };
        self.inner
            .conns
            .query(
                "shards",
                cmd("SET")
                    .arg(&key)
                    .arg(configured.unwrap_or(default))
                    .arg("NX"),
            )
            .await?;
        let stored = match self
            .inner
            .conns
            .query("shards", cmd("GET").arg(&key))
            .await?
        {
            Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            other => return Err(codec::unexpected("shards", &other)),
        };
        let stored = match stored.parse::<usize>() {
            Ok(n) if (1..=MAX_SHARDS).contains(&n) => n,
            _ => {
                return Err(Error::Corrupt {
                    key: key.clone(),
                    detail: format!("not a key shard count: {stored:?}"),
                })
            }
        };
        match configured {
            Some(n) if n != stored => Err(Error::config(
                "shards",
                format!(
                    "this deployment (keys {}) spreads its jobs over {stored} key shards, \
                     not {n}: leave the count out, or give it {stored}; to change it, drain \
                     the deployment and start one under another prefix",
                    self.inner.tags[0]
                ),
            )),
            _ => Ok(stored),
        }
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

    /// Refuses a one-server URL that names a node of a Redis Cluster
    /// (`INFO cluster` says `cluster_enabled:1`): every script whose keys
    /// live on another node would be answered `MOVED`, and a failover
    /// would not be followed. A server that does not answer `INFO` (some
    /// proxies) is taken as it is.
    async fn refuse_cluster_node(&self) -> Result<()> {
        let info = match self
            .inner
            .conns
            .query("info", cmd("INFO").arg("cluster"))
            .await
        {
            Ok(Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Value::VerbatimString { text, .. }) => text,
            _ => return Ok(()),
        };
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            return Err(Error::config(
                "url",
                format!(
                    "Redis at {} is a node of a Redis Cluster: name the cluster's nodes \
                 (redis+cluster://host:port,host:port) so that calls follow the \
                 cluster's slots and its failovers",
                    redact(&self.inner.url)
                ),
            ));
        }
        Ok(())
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
    /// `None`: decided at connect (on for a cluster with replicas).
    wait: Option<Option<Replicated>>,
    /// `None`: the deployment's, or the default for a new one.
    shards: Option<usize>,
}

/// Key shards of a new deployment on a Redis Cluster, when not configured:
/// enough that the jobs spread over the masters of a typical cluster
/// (3 to 8), few enough that an idle worker's round of leases is short.
pub const CLUSTER_SHARDS: usize = 16;

/// How long a shard that had no work is passed by by this process's
/// leases (see `RedisBackend::shard_is_idle`): at most this much later
/// than otherwise does another process's new work there get leased.
pub const IDLE_SHARD: Duration = Duration::from_millis(20);

/// The most key shards a deployment may have.
pub const MAX_SHARDS: usize = 1024;

/// Marks acknowledged by replicas before a batch is sent: `WAIT replicas
/// timeout` after each call that marks a batch as sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Replicated {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}

/// The wait of a cluster with replicas, when none was configured: one
/// replica, which on one network answers in well under a millisecond.
const DEFAULT_WAIT: Replicated = Replicated {
    replicas: 1,
    timeout: Duration::from_millis(100),
};

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
            .field("wait", &self.wait)
            .field("shards", &self.shards)
            .finish()
    }
}

impl RedisBackendBuilder {
    /// After each call that marks a batch as sending, waits until
    /// `replicas` replicas acknowledged it (`WAIT`), at most `timeout`, so
    /// that a replica promoted by a failover knows the batch may have been
    /// sent and dead-letters it as in doubt rather than sending it again
    /// (G1). `replicas` 0 turns it off.
    ///
    /// Default: on a Redis Cluster whose nodes have replicas, one replica
    /// and 100 ms; off otherwise (a single server, or a cluster without
    /// replicas, where `WAIT` could only time out). When too few replicas
    /// answer in time the batch is sent anyway, with a warning (at most one
    /// every 10 s) and [`RedisBackend::unreplicated_marks`] counting it: a
    /// failover in that window may send it twice. See docs/operations.md.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = Some((replicas > 0).then_some(Replicated { replicas, timeout }));
        self
    }

    /// The key prefix (default `wds`). Deployments with different prefixes
    /// share one Redis without seeing each other. Every key is
    /// `{prefix}:…`, one hash tag, so the scripts also run on Redis Cluster.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many key shards the deployment's jobs are spread over: each
    /// job's keys live under the hash tag of one shard (`{prefix}` for
    /// shard 0, `{prefix:shard:N}` for the others), chosen by a hash of
    /// its id, so each script still runs on one slot while a Redis
    /// Cluster spreads the shards, and so the jobs, over its masters.
    /// Each shard has its own turn list, lease index and retry schedule,
    /// so no key is touched by every lease; a worker leases from the
    /// shards in turn.
    ///
    /// The count belongs to the deployment: the first process to connect
    /// stores it (`{prefix}:shards`) and every later one uses it; naming a
    /// different one is refused at connect ([`Error::Config`]), since jobs
    /// would be looked for on the wrong shards. Default: the stored count;
    /// for a new deployment [`CLUSTER_SHARDS`] on a Redis Cluster and 1
    /// on a single server (where shards only add round trips). To change
    /// it, drain the deployment and start one with another prefix.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
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
            return Err(Error::config(
                "prefix",
                format!(
                    "the Redis key prefix must be non-empty and without braces, got {:?}",
                    self.prefix
                ),
            ));
        }
        if let Some(shards) = self.shards {
            if shards == 0 || shards > MAX_SHARDS {
                return Err(Error::config(
                    "shards",
                    format!("the key shard count must be 1 to {MAX_SHARDS}, got {shards}"),
                ));
            }
        }
        if self.command_timeout.is_zero() {
            return Err(Error::config(
                "command_timeout",
                "the Redis command timeout must be positive",
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
                tags: vec![format!("{{{}}}", self.prefix)],
                cursor: AtomicUsize::new(0),
                idle_until: vec![AtomicU64::new(0)],
                retention: self.retention,
                detail_limit: self.detail_limit,
                worker_retention: self.worker_retention,
                url: self.url,
                wait: None,
                unreplicated: AtomicU64::new(0),
                warned_ms: AtomicU64::new(0),
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
        if !backend.inner.conns.is_cluster() {
            backend.refuse_cluster_node().await?;
        }
        let wait = match self.wait {
            Some(wait) => wait,
            None if backend.inner.conns.is_cluster() && backend.cluster_has_replicas().await? => {
                Some(DEFAULT_WAIT)
            }
            None => None,
        };
        let shards = backend.agree_on_shards(self.shards).await?;
        let mut backend = backend;
        // No clone of the backend exists yet: it is ours to finish.
        let Some(inner) = Arc::get_mut(&mut backend.inner) else {
            return Err(Error::Corrupt {
                key: "connect".into(),
                detail: "the backend was shared before it was set up".into(),
            });
        };
        inner.wait = wait;
        inner
            .tags
            .extend((1..shards).map(|n| format!("{{{}:shard:{n}}}", self.prefix)));
        inner.idle_until = (0..shards).map(|_| AtomicU64::new(0)).collect();
        // Processes start their leases at different shards.
        inner.cursor = AtomicUsize::new(std::process::id() as usize % shards);
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_shards(n: usize) -> RedisBackend {
        RedisBackend {
            inner: Arc::new(Inner {
                conns: Conns::new("redis://127.0.0.1:1", 1, Duration::from_secs(1)).unwrap(),
                tags: (0..n).map(|i| format!("{{t:shard:{i}}}")).collect(),
                cursor: AtomicUsize::new(0),
                idle_until: (0..n).map(|_| AtomicU64::new(0)).collect(),
                retention: Duration::from_secs(1),
                worker_retention: Duration::from_secs(1),
                detail_limit: 1,
                url: String::new(),
                wait: None,
                unreplicated: AtomicU64::new(0),
                warned_ms: AtomicU64::new(0),
            }),
        }
    }

    #[test]
    fn ids_carry_their_shard_and_nothing_else_reads_as_one() {
        let b = with_shards(12);
        for shard in 0..12 {
            for id in ["job/7", "retry/15", "job@3/7#9", "a@b/1"] {
                let tagged = RedisBackend::id_from(shard, id.to_owned());
                assert_eq!(b.shard_of_id(&tagged), (shard, id), "{tagged}");
            }
        }
        // Not a suffix of ours: the whole id, on shard 0.
        for id in [
            "job/7@0", "job/7@03", "job/7@12", "job/7@", "job/7@x", "job/7@-1",
        ] {
            assert_eq!(b.shard_of_id(id), (0, id), "{id}");
        }
        // One shard: ids are never tagged nor read as tagged.
        assert_eq!(with_shards(1).shard_of_id("job/7@1"), (0, "job/7@1"));
    }

    #[test]
    fn jobs_spread_over_every_shard_and_stay_put() {
        let b = with_shards(16);
        let mut seen = [0usize; 16];
        for n in 0..1600 {
            let job = wds_core::JobId::from_identity(&format!("file-{n}.csv"));
            seen[b.shard_of(job.as_str())] += 1;
        }
        assert!(seen.iter().all(|&c| (50..=150).contains(&c)), "{seen:?}");
        // FNV-1a of "abc" is 0xe71fa2190541574b: the hash must never change.
        assert_eq!(b.shard_of("abc"), (0xe71f_a219_0541_574b_u64 % 16) as usize);
        assert_eq!(with_shards(1).shard_of("abc"), 0);
    }
}
