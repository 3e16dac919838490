//! Every setting: a flag and a `WDS_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wds_core::health::CircuitSettings;
use wds_core::retry::RetryPolicy;
use wds_core::{DeliveryMode, EngineConfig};
use wds_server::ServerLimits;

/// WDS — turns files of users into webhook calls, within a rate limit, with
/// proof that nobody was missed and nobody was alerted twice.
///
/// With no role it runs `all`: the three services in one process on the
/// SQLite backend (DATA_DIR/wds.db), which survives restarts. With --redis
/// each role uses Redis, so an initiator, any number of workers and a
/// notifier run as separate processes.
#[derive(Debug, Parser)]
#[command(name = "full_system", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) role: Option<Role>,
    #[command(flatten)]
    pub(crate) settings: Settings,
}

/// What this process runs.
#[derive(Debug, Subcommand)]
pub(crate) enum Role {
    /// Initiator, worker and notifier in one process (the default).
    All,
    /// Watches the inbox, reads files into the queue, serves the control API.
    Initiator,
    /// Delivers from the queue to the webhook (run as many as you like).
    Worker,
    /// The webhook receiver: verifies, rate-limits, dedupes, writes the output CSV.
    Notifier,
    /// Generates a file of users, drops it into the inbox, shows progress and
    /// exits with the job report once every line is accounted for.
    Demo(DemoArgs),
}

/// Settings of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How many users the generated file lists.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) rows: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Where the queue and the jobs' state live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    /// One SQLite file (DATA_DIR/wds.db): survives restarts; one process
    /// (`all`, `demo`) at a time.
    Sqlite,
    /// Process memory: fast, but a restart forgets every job.
    Memory,
    /// A Redis server (--redis URL): every role, many processes and machines.
    Redis,
}

/// Settings shared by every role.
#[derive(Clone, Debug, Args)]
pub(crate) struct Settings {
    /// The backend [default: redis with --redis, else sqlite].
    #[arg(long, env = "WDS_BACKEND", value_enum, global = true)]
    pub(crate) backend: Option<BackendKind>,
    /// The SQLite database file [default: DATA_DIR/wds.db].
    #[arg(long, env = "WDS_DB", global = true)]
    pub(crate) db: Option<PathBuf>,
    /// Sync the SQLite database on every commit (synchronous=FULL): a power
    /// loss then loses nothing acknowledged, at one fsync per call. By
    /// default only a process crash is covered that way.
    #[arg(long, env = "WDS_DB_SYNC_FULL", global = true)]
    pub(crate) db_sync_full: bool,
    /// Redis URL (redis:// or rediss://, with password and db number), or a
    /// Redis Cluster's nodes (redis+cluster://host:port,host:port). Needed
    /// by the separate roles; `all` and `demo` use SQLite without it.
    #[arg(long, env = "WDS_REDIS_URL", global = true, hide_env_values = true)]
    pub(crate) redis: Option<String>,
    /// Key prefix in Redis, so several deployments can share one server.
    #[arg(long, env = "WDS_REDIS_PREFIX", default_value = "wds", global = true)]
    pub(crate) redis_prefix: String,
    /// How many key shards a new deployment spreads its jobs over (so a
    /// Redis Cluster spreads them over its masters) [default: the
    /// deployment's; for a new one 16 on a cluster, 1 on one server]. A
    /// count other than the deployment's is refused at start.
    #[arg(long, env = "WDS_REDIS_SHARDS", global = true)]
    pub(crate) redis_shards: Option<usize>,
    /// Folder for the inbox, archive and outbox when they are not set one by one.
    #[arg(long, env = "WDS_DATA_DIR", default_value = "wds-data", global = true)]
    pub(crate) data_dir: PathBuf,
    /// The watched folder [default: DATA_DIR/inbox].
    #[arg(long, env = "WDS_INBOX", global = true)]
    pub(crate) inbox: Option<PathBuf>,
    /// Where completely read files are moved [default: DATA_DIR/done].
    #[arg(long, env = "WDS_ARCHIVE", global = true)]
    pub(crate) archive: Option<PathBuf>,
    /// Where files whose job failed (changed or removed while being read)
    /// are moved, each with NAME.reason.txt [default: DATA_DIR/rejected].
    #[arg(long, env = "WDS_REJECTED", global = true)]
    pub(crate) rejected: Option<PathBuf>,
    /// The notifier's output CSV [default: DATA_DIR/outbox/alerts.csv].
    #[arg(long, env = "WDS_OUTPUT", global = true)]
    pub(crate) output: Option<PathBuf>,
    /// Message for files that list only user ids (a `<file>.message` sidecar overrides it).
    #[arg(long, env = "WDS_DEFAULT_MESSAGE", global = true)]
    pub(crate) default_message: Option<String>,
    /// A file counts as written once unchanged this long (milliseconds).
    #[arg(long, env = "WDS_SETTLE_MS", default_value_t = 500, global = true)]
    pub(crate) settle_ms: u64,
    /// The webhook workers call [default: the notifier, http://NOTIFIER_LISTEN/webhook].
    #[arg(long, env = "WDS_WEBHOOK_URL", global = true, hide_env_values = true)]
    pub(crate) webhook_url: Option<String>,
    /// Where the initiator posts a job's report (JSON, signed with the
    /// webhook secrets, `webhook-id` `<job>:done`) once the job finishes
    /// [default: no notice; a log line only].
    #[arg(long, env = "WDS_ON_JOB_DONE", global = true, hide_env_values = true)]
    pub(crate) on_job_done: Option<String>,
    /// Deliveries per second to the webhook, across all workers (with Redis)
    /// or in this process [default: unlimited].
    #[arg(long, env = "WDS_RATE", global = true)]
    pub(crate) rate: Option<u32>,
    /// Largest burst above the rate.
    #[arg(long, env = "WDS_BURST", default_value_t = 50, global = true)]
    pub(crate) burst: u32,
    /// Webhook calls in flight at once, per worker: a number, or `auto` to
    /// adapt it to the endpoint (up to --max-concurrency): more while calls
    /// succeed at their usual latency, fewer on 503s, timeouts, 429s or a
    /// rising latency.
    #[arg(long, env = "WDS_CONCURRENCY", default_value = "64", value_parser = parse_concurrency, global = true)]
    pub(crate) concurrency: Concurrency,
    /// Threads that deliver, each with a runtime and an HTTP client of its
    /// own and an equal share of --concurrency: a number, or `auto` for one
    /// per core with at least 32 calls each. Each thread has its own
    /// sending window, so a worker killed mid-send may leave each thread's
    /// window in doubt.
    #[arg(long, env = "WDS_DELIVERY_THREADS", default_value = "auto", value_parser = parse_threads, global = true)]
    pub(crate) delivery_threads: Threads,
    /// The most calls in flight per worker with --concurrency auto.
    #[arg(
        long,
        env = "WDS_MAX_CONCURRENCY",
        default_value_t = 256,
        global = true
    )]
    pub(crate) max_concurrency: usize,
    /// Messages per batch (one queue round trip each).
    #[arg(long, env = "WDS_BATCH_SIZE", default_value_t = 100, global = true)]
    pub(crate) batch_size: usize,
    /// Attempts per message before it is dead-lettered as exhausted.
    #[arg(long, env = "WDS_MAX_ATTEMPTS", default_value_t = 5, global = true)]
    pub(crate) max_attempts: u32,
    /// Timeout of one webhook call (milliseconds).
    #[arg(long, env = "WDS_TIMEOUT_MS", default_value_t = 10_000, global = true)]
    pub(crate) timeout_ms: u64,
    /// The HTTP client of the webhook calls: reqwest, or hyper's own
    /// pooled client (less CPU per call; plain http:// URLs without
    /// credentials only, refused at start otherwise).
    #[arg(long, env = "WDS_HTTP_CLIENT", default_value = "reqwest", value_parser = ["reqwest", "hyper"], global = true)]
    pub(crate) http_client: String,
    /// How long a worker's lease on a batch lasts without being extended
    /// (milliseconds): how soon the batches of a worker that died go to
    /// another worker. Leases are extended every third of it while held.
    #[arg(
        long,
        env = "WDS_LEASE_TTL_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub(crate) lease_ttl_ms: u64,
    /// at-most-once (in-doubt messages are dead-lettered) or at-least-once
    /// (they are re-sent with the same webhook-id).
    #[arg(long, env = "WDS_MODE", default_value = "at-most-once", value_parser = parse_mode, global = true)]
    pub(crate) mode: DeliveryMode,
    /// Signing secrets (whsec_…), comma-separated: workers sign with each
    /// (several signatures, for key rotation) and the notifier accepts any.
    /// `all` and `demo` generate one for the run when none is given; a
    /// `notifier` refuses to start without one unless
    /// --insecure-accept-unsigned.
    #[arg(
        long = "secret",
        env = "WDS_SECRETS",
        value_delimiter = ',',
        global = true,
        hide_env_values = true
    )]
    pub(crate) secrets: Vec<String>,
    /// Let a notifier without a secret accept unsigned webhooks: anyone who
    /// can reach it can then make it write alerts.
    #[arg(long, env = "WDS_INSECURE_ACCEPT_UNSIGNED", global = true)]
    pub(crate) insecure_accept_unsigned: bool,
    /// Bearer token for the control API (every route but /healthz).
    #[arg(long, env = "WDS_TOKEN", global = true, hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Where the control API listens.
    #[arg(
        long,
        env = "WDS_API_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub(crate) api_listen: SocketAddr,
    /// Where the notifier listens.
    #[arg(
        long,
        env = "WDS_NOTIFIER_LISTEN",
        default_value = "127.0.0.1:8090",
        global = true
    )]
    pub(crate) notifier_listen: SocketAddr,
    /// The id a worker beats under in the backend, shown by GET /workers and
    /// the status page; unique per worker [default: HOSTNAME-PID].
    #[arg(long, env = "WDS_WORKER_NAME", value_parser = parse_worker_name, global = true)]
    pub(crate) worker_name: Option<String>,
    /// Where a worker serves its own /metrics and /healthz [default: not served].
    #[arg(long, env = "WDS_METRICS_LISTEN", global = true)]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// The notifier's own rate limit per client, requests/s [default: none].
    #[arg(long, env = "WDS_NOTIFIER_RATE", global = true)]
    pub(crate) notifier_rate: Option<u32>,
    /// Longest a client may take to send a request's headers, on every
    /// HTTP server (milliseconds).
    #[arg(
        long,
        env = "WDS_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub(crate) http_header_timeout_ms: u64,
    /// Longest a connection may stay with no byte moving, on every HTTP
    /// server (milliseconds).
    #[arg(
        long,
        env = "WDS_HTTP_IDLE_TIMEOUT_MS",
        default_value_t = 60_000,
        global = true
    )]
    pub(crate) http_idle_timeout_ms: u64,
    /// Longest one request may take, body included, on every HTTP server
    /// (milliseconds; uploads have --upload-timeout-ms).
    #[arg(
        long,
        env = "WDS_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 60_000,
        global = true
    )]
    pub(crate) http_request_timeout_ms: u64,
    /// Connections open at once per HTTP server; more wait to be accepted.
    #[arg(
        long,
        env = "WDS_HTTP_MAX_CONNECTIONS",
        default_value_t = 512,
        global = true
    )]
    pub(crate) http_max_connections: usize,
    /// Largest upload accepted by POST /upload, in bytes.
    #[arg(long, env = "WDS_MAX_UPLOAD_BYTES", default_value_t = 1 << 30, global = true)]
    pub(crate) max_upload_bytes: u64,
    /// Uploads received at once; one more gets 503.
    #[arg(
        long,
        env = "WDS_MAX_CONCURRENT_UPLOADS",
        default_value_t = 4,
        global = true
    )]
    pub(crate) max_concurrent_uploads: usize,
    /// Free space kept on the inbox's disk: uploads that would go below get 507.
    #[arg(long, env = "WDS_MIN_FREE_DISK_BYTES", default_value_t = 1 << 30, global = true)]
    pub(crate) min_free_disk_bytes: u64,
    /// Longest an upload may take, body included (milliseconds).
    #[arg(
        long,
        env = "WDS_UPLOAD_TIMEOUT_MS",
        default_value_t = 900_000,
        global = true
    )]
    pub(crate) upload_timeout_ms: u64,
    /// Rejects, and dead letters, of a job kept in detail (reasons); past it a
    /// line keeps its kind only, and the counts stay exact.
    #[arg(long, env = "WDS_DETAIL_LIMIT", default_value_t = 1_000, global = true)]
    pub(crate) detail_limit: usize,
    /// (userId, alertMessage) pairs of a file the duplicate filter keeps in
    /// memory (24 bytes each); a bigger file is sorted on disk, in the data dir.
    #[arg(long, env = "WDS_DEDUPE_MEMORY_PAIRS", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub(crate) dedupe_memory_pairs: u64,
    /// Turn the webhook's circuit breaker off: calls go on however the
    /// endpoint fails (each message spends its attempts).
    #[arg(long, env = "WDS_NO_CIRCUIT", global = true)]
    pub(crate) no_circuit: bool,
    /// Failed calls (connection errors, timeouts, 5xx) within the window
    /// before a worker opens the circuit.
    #[arg(
        long,
        env = "WDS_CIRCUIT_MIN_FAILURES",
        default_value_t = 20,
        global = true
    )]
    pub(crate) circuit_min_failures: u32,
    /// How many of a worker's last calls the failures are counted among.
    #[arg(long, env = "WDS_CIRCUIT_SAMPLE", default_value_t = 100, global = true)]
    pub(crate) circuit_sample: u32,
    /// Share of a worker's calls within the window that must have failed
    /// to open the circuit, in percent.
    #[arg(
        long,
        env = "WDS_CIRCUIT_FAILURE_PERCENT",
        default_value_t = 50,
        global = true
    )]
    pub(crate) circuit_failure_percent: u32,
    /// How far back failures count (milliseconds).
    #[arg(
        long,
        env = "WDS_CIRCUIT_WINDOW_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub(crate) circuit_window_ms: u64,
    /// Wait from opening the circuit to the first probe (milliseconds).
    #[arg(
        long,
        env = "WDS_CIRCUIT_FIRST_PROBE_MS",
        default_value_t = 1_000,
        global = true
    )]
    pub(crate) circuit_first_probe_ms: u64,
    /// Longest wait between two probes; each failed probe doubles the wait
    /// up to this (milliseconds).
    #[arg(
        long,
        env = "WDS_CIRCUIT_MAX_PROBE_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub(crate) circuit_max_probe_ms: u64,
    /// Log format.
    #[arg(long, env = "WDS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub(crate) log_format: LogFormat,
}

fn parse_worker_name(s: &str) -> Result<String, String> {
    let name = s.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err("a worker name must be non-empty, without control characters".into());
    }
    Ok(name.to_string())
}

fn parse_mode(s: &str) -> Result<DeliveryMode, String> {
    s.parse()
}

/// Calls in flight per worker: fixed, or adapted to the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Concurrency {
    /// This many.
    Fixed(usize),
    /// Adapted, up to --max-concurrency.
    Auto,
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Concurrency::Fixed(n) => write!(f, "{n}"),
            Concurrency::Auto => f.write_str("auto"),
        }
    }
}

/// Delivery threads: one per core (`auto`) or a fixed number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    /// `DeliveryThreads::auto` of the engine's settings.
    Auto,
    /// This many, at least 1.
    Fixed(usize),
}

fn parse_threads(s: &str) -> Result<Threads, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Threads::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Threads::Fixed(n)),
        _ => Err(format!(
            "expected a number of threads (at least 1) or auto, got {s:?}"
        )),
    }
}

fn parse_concurrency(s: &str) -> Result<Concurrency, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Concurrency::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Concurrency::Fixed(n)),
        _ => Err(format!(
            "expected a number of calls (at least 1) or auto, got {s:?}"
        )),
    }
}

impl Settings {
    pub(crate) fn inbox(&self) -> PathBuf {
        self.inbox
            .clone()
            .unwrap_or_else(|| self.data_dir.join("inbox"))
    }

    pub(crate) fn archive(&self) -> PathBuf {
        self.archive
            .clone()
            .unwrap_or_else(|| self.data_dir.join("done"))
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.db
            .clone()
            .unwrap_or_else(|| self.data_dir.join("wds.db"))
    }

    /// The backend asked for: `--backend`, else Redis when a URL is given,
    /// else SQLite.
    pub(crate) fn backend_kind(&self) -> BackendKind {
        match (self.backend, &self.redis) {
            (Some(kind), _) => kind,
            (None, Some(_)) => BackendKind::Redis,
            (None, None) => BackendKind::Sqlite,
        }
    }

    pub(crate) fn rejected(&self) -> PathBuf {
        self.rejected
            .clone()
            .unwrap_or_else(|| self.data_dir.join("rejected"))
    }

    pub(crate) fn output(&self) -> PathBuf {
        self.output
            .clone()
            .unwrap_or_else(|| self.data_dir.join("outbox").join("alerts.csv"))
    }

    pub(crate) fn webhook_url(&self, notifier: SocketAddr) -> String {
        self.webhook_url
            .clone()
            .unwrap_or_else(|| format!("http://{notifier}/webhook"))
    }

    /// The timeouts and connection cap of every HTTP server.
    pub(crate) fn server_limits(&self) -> ServerLimits {
        let mut limits = ServerLimits::default();
        limits.header_timeout = Duration::from_millis(self.http_header_timeout_ms);
        limits.idle_timeout = Duration::from_millis(self.http_idle_timeout_ms);
        limits.request_timeout = Duration::from_millis(self.http_request_timeout_ms);
        limits.max_connections = self.http_max_connections;
        limits
    }

    pub(crate) fn engine_config(&self) -> EngineConfig {
        let mut c = EngineConfig::default();
        match self.concurrency {
            Concurrency::Fixed(n) => c.concurrency = n,
            Concurrency::Auto => {
                c.concurrency = self.max_concurrency;
                c.adaptive_concurrency = true;
            }
        }
        c.batch_size = self.batch_size;
        c.mode = self.mode;
        c.delivery_timeout = Duration::from_millis(self.timeout_ms);
        c.lease_ttl = Duration::from_millis(self.lease_ttl_ms);
        // The duplicate filter of a big file spills next to the database,
        // on a disk, rather than to a /tmp that may be in RAM.
        c.spill_dir = Some(self.data_dir.clone());
        c.dedupe_memory_pairs = usize::try_from(self.dedupe_memory_pairs).unwrap_or(usize::MAX);
        c.retry = RetryPolicy::default();
        c.retry.max_attempts = self.max_attempts;
        c.circuit = self.circuit();
        c
    }

    fn circuit(&self) -> CircuitSettings {
        let mut c = CircuitSettings::default();
        c.enabled = !self.no_circuit;
        c.min_failures = self.circuit_min_failures;
        c.sample = self.circuit_sample;
        c.failure_percent = self.circuit_failure_percent;
        c.window = Duration::from_millis(self.circuit_window_ms);
        c.first_probe_interval = Duration::from_millis(self.circuit_first_probe_ms);
        c.max_probe_interval = Duration::from_millis(self.circuit_max_probe_ms);
        c
    }
}
