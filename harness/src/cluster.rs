//! A WDS deployment as real processes for the fault tests: a `redis-server`
//! of its own (append-only, so it can be restarted without losing state),
//! initiators, workers and a notifier started from `full_system`, the inbox,
//! and the control API to follow jobs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use wds_core::{backend::OffsetStore, JobId, JobReport};
use wds_redis::RedisBackend;

use crate::http::{http_get, http_post};
use crate::ports::{reserve_port, ReservedPort, ANY_PORT};
use crate::process::{Service, TEST_SECRET};
use crate::redis::RedisServer;

/// The scale factor of the fault tests: `WDS_FAULT_SCALE` (default 1)
/// multiplies file sizes and kill counts, for longer runs by hand.
pub fn scale() -> u64 {
    std::env::var("WDS_FAULT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(1)
}

/// One deployment: Redis, processes, folders.
///
/// Every server binds port 0 and the deployment reads the address it got
/// from its log, so tests running in parallel never race for a port; the
/// two that must come back on the same port after a restart, Redis and the
/// notifier, bind a [`ReservedPort`] instead, which no other test server
/// can take meanwhile.
#[derive(Debug)]
pub struct Cluster {
    /// The deployment's folder (inbox under `wds-data/inbox`).
    pub dir: tempfile::TempDir,
    /// Its Redis.
    pub redis: RedisServer,
    /// The control API of the initiator (or `all`) started last (empty
    /// before one starts).
    pub api: String,
    /// The notifier's address (empty before one starts; a restarted
    /// notifier binds the same one, so workers keep reaching it).
    pub notifier_addr: String,
    /// Holds the notifier's port for the deployment's life: no other test
    /// server can take it while the notifier is down (see [`ReservedPort`]).
    notifier_port: Option<ReservedPort>,
    env: Vec<(String, String)>,
    /// Every process started, by name.
    pub services: Vec<Service>,
    started: usize,
    /// Made by [`Cluster::local`]: one `all` on SQLite, no Redis.
    local: bool,
}

impl Cluster {
    /// Starts Redis; `env` (`WDS_*` settings) applies to every process after
    /// the defaults: a shared signing secret, a 200 ms settle time and 8 s leases (renewed every
    /// 2.7 s: slack enough that a live worker on a loaded machine keeps its
    /// leases, so only killed workers leave messages in doubt).
    pub fn new(env: &[(&str, &str)]) -> Cluster {
        let redis = RedisServer::builder().append_only(true).start();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut all = vec![
            ("WDS_REDIS_URL".to_string(), redis.url()),
            ("WDS_API_LISTEN".to_string(), ANY_PORT.to_string()),
            ("WDS_SETTLE_MS".to_string(), "200".to_string()),
            ("WDS_LEASE_TTL_MS".to_string(), "8000".to_string()),
            ("WDS_SECRETS".to_string(), TEST_SECRET.to_string()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Cluster {
            dir,
            redis,
            api: String::new(),
            notifier_addr: String::new(),
            notifier_port: None,
            env: all,
            services: Vec::new(),
            started: 0,
            local: false,
        }
    }

    /// A deployment of one `all` process on its default backend (SQLite
    /// under `wds-data` in the deployment's folder), with the same settings
    /// as [`Cluster::new`] but no `WDS_REDIS_URL`: start it with
    /// `start("all", ..)`, which then checks the log says SQLite.
    ///
    /// [`Cluster::redis`] is there only because the Redis deployments need
    /// it: here it is a server no process is told of, killed at once, so a
    /// process that reached for Redis anyway would fail rather than pass.
    /// [`Cluster::backend`] and [`Cluster::reports`] are for Redis
    /// deployments; read jobs through the control API instead.
    pub fn local(env: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::new(env);
        cluster.redis.kill();
        cluster.env.retain(|(k, _)| k != "WDS_REDIS_URL");
        cluster.local = true;
        cluster
    }

    /// Whether this is a [`Cluster::local`] deployment.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Starts `role` with the deployment's settings plus `env`; returns its
    /// index in [`Cluster::services`]. An initiator or a notifier is
    /// running, with its address known, when this returns; a worker started
    /// after the notifier delivers to it unless `WDS_WEBHOOK_URL` says
    /// otherwise.
    pub fn start(&mut self, role: &str, env: &[(&str, &str)]) -> usize {
        self.started += 1;
        let name = format!("{role}-{}", self.started);
        // A notifier binds a reserved port, the same one when restarted;
        // other roles bind port 0 if they serve a notifier at all.
        let notifier_listen = match (role, self.notifier_addr.is_empty()) {
            (_, false) => self.notifier_addr.clone(),
            ("notifier", true) => {
                let port = self.notifier_port.get_or_insert_with(reserve_port).port();
                format!("127.0.0.1:{port}")
            }
            _ => ANY_PORT.to_string(),
        };
        let webhook = format!("http://{}/webhook", self.notifier_addr);
        let mut all: Vec<(&str, &str)> = vec![("WDS_NOTIFIER_LISTEN", &notifier_listen)];
        if !self.notifier_addr.is_empty() {
            all.push(("WDS_WEBHOOK_URL", &webhook));
        }
        all.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all.extend_from_slice(env);
        assert!(
            !self.local || role == "all",
            "a local deployment runs `all` only, not {role}"
        );
        let mut service = Service::start(&name, self.dir.path(), &[role], &all);
        if self.local {
            service.wait_for_line("sqlite backend open", Duration::from_secs(120));
        }
        match role {
            "initiator" | "all" => self.api = service.address("initiator running", "api"),
            "notifier" => self.notifier_addr = service.address("notifier listening", "addr"),
            _ => {}
        }
        self.services.push(service);
        self.services.len() - 1
    }

    /// The watched folder, once the initiator created it.
    pub fn inbox(&self) -> PathBuf {
        let inbox = self.dir.path().join("wds-data/inbox");
        self.eventually(
            "the initiator to create its inbox",
            Duration::from_secs(120),
            || inbox.exists().then_some(()),
        );
        inbox
    }

    /// Writes `body` next to the inbox and renames it in, as a person would.
    pub fn drop_file(&self, name: &str, body: &[u8]) {
        let inbox = self.inbox();
        let staging = self.dir.path().join(format!("staging-{name}"));
        std::fs::write(&staging, body).expect("write staging file");
        std::fs::rename(&staging, inbox.join(name)).expect("rename into the inbox");
    }

    /// Every job, from the control API at `api` (`None` while it does not answer).
    pub fn jobs_at(api: &str) -> Option<Vec<Value>> {
        match http_get(api, "/jobs")? {
            (200, body) => serde_json::from_str::<Value>(&body)
                .ok()?
                .as_array()
                .cloned(),
            _ => None,
        }
    }

    /// Every job, from the first initiator's control API.
    pub fn jobs(&self) -> Option<Vec<Value>> {
        Self::jobs_at(&self.api)
    }

    /// Waits until `jobs` jobs exist and every one is done; returns them.
    pub fn wait_done(&self, jobs: usize, timeout: Duration) -> Vec<Value> {
        self.eventually("every job to be done", timeout, || {
            let all = self.jobs()?;
            (all.len() >= jobs && all.iter().all(|j| j["state"] == "done")).then_some(all)
        })
    }

    /// `POST {path}` on the control API.
    pub fn post(&self, path: &str, body: &str) -> Option<(u16, String)> {
        http_post(&self.api, path, body)
    }

    /// Polls `f` every 100 ms until it returns `Some`, failing with every
    /// process's log after `timeout`.
    pub fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = f() {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; jobs: {:?}\n{}",
                    self.jobs(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let text = s.log_text();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {} ---\n", s.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The lines of every process's whole log (not only its tail) that
    /// report a panic. Empty when nothing panicked.
    pub fn panics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.services {
            for line in s.log_text().lines() {
                if line.contains("panicked") {
                    out.push(format!("{}: {line}", s.name));
                }
            }
        }
        out
    }

    /// Connects to the deployment's Redis as the processes do, to read
    /// per-line outcomes.
    pub fn backend(&self, rt: &tokio::runtime::Runtime) -> RedisBackend {
        rt.block_on(
            RedisBackend::builder(self.redis.url())
                .prefix("wds")
                .connect(),
        )
        .expect("connect to the test redis")
    }

    /// The report of `job` (a `GET /jobs` entry) straight from the backend.
    pub fn report(
        &self,
        rt: &tokio::runtime::Runtime,
        backend: &RedisBackend,
        job: &Value,
    ) -> JobReport {
        let id = JobId::new(job["job"].as_str().expect("job id").to_string());
        rt.block_on(backend.report(&id))
            .expect("report")
            .expect("job exists")
    }

    /// Whether the process at `index` is still running.
    pub fn running(&mut self, index: usize) -> bool {
        self.services[index].wait(Duration::ZERO).is_none()
    }

    /// Asserts that each of `indices` still runs and that no log shows a
    /// panic (with every log in the message when one stopped).
    pub fn assert_running(&mut self, indices: impl IntoIterator<Item = usize>) {
        for index in indices {
            assert!(
                self.running(index),
                "{} stopped:\n{}",
                self.services[index].name,
                self.logs()
            );
        }
        let panics = self.panics();
        assert!(panics.is_empty(), "panics in the logs: {panics:#?}");
    }

    /// Every job's report, straight from Redis (works while no initiator runs).
    pub fn reports(&self, rt: &tokio::runtime::Runtime, backend: &RedisBackend) -> Vec<JobReport> {
        rt.block_on(backend.reports()).unwrap_or_default()
    }

    /// The folder the processes run in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A job's count field.
pub fn count(job: &Value, field: &str) -> u64 {
    job[field]
        .as_u64()
        .unwrap_or_else(|| panic!("job has no {field}: {job}"))
}

/// Each line's outcome (`None`: no terminal state) for `lines` of `job`,
/// read with a few connections at once.
pub fn outcomes(
    rt: &tokio::runtime::Runtime,
    backend: &RedisBackend,
    job: &JobId,
    lines: std::ops::RangeInclusive<u64>,
) -> Vec<(u64, Option<wds_core::backend::LineOutcome>)> {
    let all: Vec<u64> = lines.collect();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in all.chunks(all.len().div_ceil(8).max(1)) {
            let (chunk, backend, job) = (chunk.to_vec(), backend.clone(), job.clone());
            tasks.spawn(async move {
                let mut out = Vec::with_capacity(chunk.len());
                for line in chunk {
                    let id = wds_core::MessageId {
                        job: job.clone(),
                        line,
                    };
                    out.push((line, backend.outcome(&id).await.expect("outcome")));
                }
                out
            });
        }
        let mut out = Vec::new();
        while let Some(part) = tasks.join_next().await {
            out.extend(part.expect("outcome task"));
        }
        out.sort_by_key(|(line, _)| *line);
        out
    })
}

/// A small xorshift generator for the tests' random choices, seeded from
/// `WDS_FAULT_SEED` or the clock (the seed is printed, to replay a run).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded as described above.
    pub fn new() -> Rng {
        let seed = std::env::var("WDS_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("random seed {seed} (set WDS_FAULT_SEED to replay)");
        Rng(seed.max(1))
    }

    /// A number in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}
