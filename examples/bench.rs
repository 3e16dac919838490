//! The WDS benchmark: every figure of `docs/performance.md`, measured side
//! by side in one run, printed as a markdown table with the targets.
//!
//! ```text
//! cargo run --release --example bench                        # everything, quick sizes
//! cargo run --release --example bench -- --full              # the issue's sizes (10M-line big file)
//! cargo run --release --example bench -- --only ceiling,e2e  # some scenarios
//! cargo run --release --example bench -- --help
//! ```
//!
//! It starts its own webhook receiver (the product's `Receiver`, in this
//! process) and its own `redis-server` (without persistence), and runs the
//! services under test as separate processes of the release `full_system`
//! binary (built first), so each has its own peak RSS:
//!
//! 1. `ceiling`: a bare reqwest loop posting the same bodies to the same
//!    receiver at the same concurrency, in a process of its own like a
//!    worker: the most this machine can do.
//! 2. `e2e`: a 100,000-line file, from its rename into the inbox until the
//!    job is done (every delivery settled): one process (`full_system all`)
//!    on the memory backend and on SQLite, alternating three rounds each,
//!    then Redis with an initiator and one, then two,
//!    worker processes. Latency percentiles are the upper bounds of the
//!    `wds_delivery_latency_seconds` buckets of the services' `/metrics`.
//! 3. `scaling`: a receiver answering after 100 ms; 1, 2, 4 workers at
//!    concurrency 128.
//! 4. `ratelimit`: 1,000/s shared by four workers.
//! 5. `big`: a big file through Redis (1M lines; 10M with `--full`).
//! 6. `ttfd`: time from a file's rename into the inbox to its first delivery.
//!
//! Every wait is bounded; everything listens on 127.0.0.1 only.

#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/receiver.rs"]
mod receiver;
#[path = "bench/redis_stats.rs"]
mod redis_stats;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};
use tokio::task::JoinSet;
use wds_core::{
    backend::{now_ms, OffsetStore},
    Input, JobId, JobReport, JobState, Message,
};
use wds_http::HttpSink;
use wds_redis::{RedisBackend, RedisServer};

use crate::procs::{free_addr, Service};
use crate::receiver::BenchReceiver;
use crate::redis_stats::{Commands, RedisAdmin};

/// A failure of the benchmark itself (not a missed target).
pub(crate) type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1: a bare reqwest loop to the receiver.
    Ceiling,
    /// 2: 100,000 lines end to end: memory and SQLite (one process), Redis ×1, Redis ×2.
    E2e,
    /// 3: a 100 ms receiver, 1/2/4 workers at concurrency 128.
    Scaling,
    /// 4: 1,000/s shared by four workers.
    Ratelimit,
    /// 5: a big file through Redis: worker RSS and Redis memory.
    Big,
    /// 6: time to first delivery after a rename into the inbox.
    Ttfd,
}

/// WDS benchmark: prints the figures of docs/performance.md with their targets.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Scenarios to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Scenario>,
    /// Lines of the end-to-end file (and requests of the ceiling loop).
    #[arg(long, env = "WDS_BENCH_LINES", default_value_t = 100_000)]
    lines: u64,
    /// Rounds of the one-process end-to-end run on each local backend
    /// (memory, SQLite), alternating; the median round of each is shown.
    #[arg(long, default_value_t = 3)]
    local_rounds: usize,
    /// Calls in flight per worker (and in the ceiling loop).
    #[arg(long, env = "WDS_BENCH_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Lines of the big file [default: 1,000,000; 10,000,000 with --full].
    #[arg(long, env = "WDS_BENCH_BIG_LINES")]
    big_lines: Option<u64>,
    /// The issue's full sizes: a 10,000,000-line big file, and scaling and
    /// rate-limit runs three times longer.
    #[arg(long)]
    full: bool,
    /// Files dropped one after the other to time the first delivery.
    #[arg(long, default_value_t = 5)]
    ttfd_runs: usize,
    /// Print every Redis command count.
    #[arg(long)]
    verbose: bool,
    /// Internal: run only the bare reqwest loop against this URL and print
    /// its requests/s (the ceiling runs in a process of its own).
    #[arg(long, hide = true)]
    bare_loop: Option<String>,
    /// Internal: the job id of the bare loop's webhook ids.
    #[arg(long, hide = true, default_value = "ceiling")]
    bare_job: String,
}

/// What a figure is held against.
#[derive(Clone, Copy, Debug)]
enum Target {
    AtLeast(f64, &'static str),
    AtMost(f64, &'static str),
    Between(f64, f64, &'static str),
    /// Reported, no target.
    None,
}

struct Row {
    scenario: String,
    metric: String,
    figure: String,
    target: String,
    verdict: &'static str,
}

/// The results, printed as one markdown table.
#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    /// Adds a row; `value` is judged against `target`, `shown` is how it is printed.
    fn add(&mut self, scenario: &str, metric: &str, value: f64, shown: String, target: Target) {
        let (target, verdict) = match target {
            Target::AtLeast(t, unit) => (format!("≥ {}{unit}", short(t)), value >= t),
            Target::AtMost(t, unit) => (format!("≤ {}{unit}", short(t)), value <= t),
            Target::Between(lo, hi, unit) => (
                format!("{}–{}{unit}", short(lo), short(hi)),
                value >= lo && value <= hi,
            ),
            Target::None => (String::new(), true),
        };
        let verdict = match (target.is_empty(), verdict) {
            (true, _) => "",
            (false, true) => "PASS",
            (false, false) => "MISS",
        };
        eprintln!("  {scenario} · {metric}: {shown} {target} {verdict}");
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            figure: shown,
            target,
            verdict,
        });
    }

    fn print(&self) {
        println!("| scenario | metric | figure | target | |");
        println!("|---|---|---:|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                r.scenario, r.metric, r.figure, r.target, r.verdict
            );
        }
    }
}

/// A number as a target shows it: `0.1`, `85%` is passed as `0.85` and
/// formatted by the caller's row text, so only plain numbers here.
fn short(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The `q` quantile (0..=1) of sorted values.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Everything a scenario needs.
struct Bench {
    args: Args,
    dir: tempfile::TempDir,
    t0: Instant,
    receiver: BenchReceiver,
    binary: Option<PathBuf>,
    redis: Option<RedisServer>,
    /// Deliveries/s of the bare loop, once measured.
    ceiling: Option<f64>,
    table: Table,
    /// Distinguishes files and Redis prefixes of one run.
    run: u64,
}

/// One run of `full_system all` on a local backend.
struct LocalRun {
    secs: f64,
    latency: Vec<(f64, u64)>,
    peak: u64,
    /// The SQLite database after the run.
    db: Option<wds_sqlite::Storage>,
}

/// A Redis deployment under test: one initiator, N workers, and the
/// benchmark's own view of the same keys.
struct Deployment {
    inbox: PathBuf,
    initiator: Service,
    workers: Vec<Service>,
    /// Each worker's `/metrics`.
    metrics: Vec<String>,
    backend: RedisBackend,
    admin: RedisAdmin,
}

impl Deployment {
    fn check_running(&mut self) -> Fallible<()> {
        self.initiator.check_running()?;
        self.workers.iter_mut().try_for_each(Service::check_running)
    }

    /// The largest worker peak RSS, and the initiator's.
    fn peaks(&self) -> (u64, u64) {
        let worker = self
            .workers
            .iter()
            .filter_map(Service::peak_rss)
            .max()
            .unwrap_or(0);
        (worker, self.initiator.peak_rss().unwrap_or(0))
    }

    async fn stop(self) {
        for w in self.workers {
            w.stop().await;
        }
        self.initiator.stop().await;
    }
}

/// Writes `lines` users to `inbox/.name.part` (ready to be renamed into
/// place) and returns that path and the job id the file will become.
fn write_users(inbox: &Path, name: &str, lines: u64, salt: &str) -> Fallible<(PathBuf, JobId)> {
    let part = inbox.join(format!(".{name}.part"));
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&part)?);
    writeln!(file, "userId,alertMessage")?;
    for i in 1..=lines {
        writeln!(file, "user-{i},\"{salt}: your order #{i} has shipped\"")?;
    }
    file.flush()?;
    drop(file);
    let input = Input::from_file(&part)?;
    Ok((part, JobId::from_identity(&input.identity)))
}

/// Renames the `.part` file into place: the moment the file lands.
fn land(part: &Path) -> Fallible<()> {
    let name = part
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(".part"))
        .ok_or("not a .part file")?;
    std::fs::rename(part, part.with_file_name(name))?;
    Ok(())
}

/// Polls the job's report until it is done, at most `timeout`.
async fn wait_done(
    offsets: &dyn OffsetStore,
    job: &JobId,
    timeout: Duration,
) -> Fallible<JobReport> {
    let give_up = Instant::now() + timeout;
    loop {
        if let Some(report) = offsets.report(job).await? {
            if report.state == JobState::Done {
                return Ok(report);
            }
            if Instant::now() > give_up {
                return Err(format!("job {job} not done within {timeout:?}: {report:?}").into());
            }
        } else if Instant::now() > give_up {
            return Err(format!("job {job} never appeared within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /jobs/{id}` of a control API until the job is done.
async fn wait_done_http(
    api: std::net::SocketAddr,
    job: &JobId,
    timeout: Duration,
) -> Fallible<JobReport> {
    let client = reqwest::Client::new();
    let url = format!("http://{api}/jobs/{job}");
    let give_up = Instant::now() + timeout;
    loop {
        let response = client
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        if response.status().is_success() {
            let report: JobReport = serde_json::from_slice(&response.bytes().await?)?;
            if report.state == JobState::Done {
                return Ok(report);
            }
        }
        if Instant::now() > give_up {
            return Err(format!("job {job} not done within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `wds_delivery_latency_seconds` (cumulative buckets: upper bound in
/// seconds → calls) from each `/metrics` page, summed.
async fn latency_histogram(pages: &[String]) -> Fallible<Vec<(f64, u64)>> {
    let client = reqwest::Client::new();
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for url in pages {
        let text = client
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .text()
            .await?;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("wds_delivery_latency_seconds_bucket{le=\"") else {
                continue;
            };
            let Some((le, count)) = rest.split_once("\"}") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            let count: u64 = count.trim().parse()?;
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += count,
                None => buckets.push((le, count)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(buckets)
}

/// The `q` quantile of a cumulative histogram, as "≤ bucket bound".
fn histogram_quantile(buckets: &[(f64, u64)], q: f64) -> String {
    let total = buckets.last().map_or(0, |b| b.1);
    let want = (q * total as f64).ceil() as u64;
    match buckets.iter().find(|(_, n)| *n >= want.max(1)) {
        Some((le, _)) if le.is_finite() => format!("≤ {} ms", le * 1e3),
        Some(_) => "> 16 s".into(),
        None => "n/a".into(),
    }
}

/// A job's checks: every line delivered, nothing dead, no duplicate at the receiver.
fn check_job(report: &JobReport, lines: u64, receiver: &BenchReceiver) -> Fallible<()> {
    if !report.is_complete() || report.delivered != lines || report.dead != 0 {
        return Err(format!("the job did not deliver every line: {report:?}").into());
    }
    if receiver.duplicates() != 0 {
        return Err(format!("the receiver saw {} repeated ids", receiver.duplicates()).into());
    }
    Ok(())
}

impl Bench {
    fn wants(&self, s: Scenario) -> bool {
        self.args.only.is_empty() || self.args.only.contains(&s)
    }

    fn binary(&mut self) -> Fallible<PathBuf> {
        if self.binary.is_none() {
            self.binary = Some(procs::full_system()?);
        }
        self.binary
            .clone()
            .ok_or_else(|| "no full_system binary".into())
    }

    fn redis_url(&mut self) -> String {
        self.redis
            .get_or_insert_with(|| {
                eprintln!("starting redis-server…");
                RedisServer::start()
            })
            .url()
    }

    fn next_name(&mut self, what: &str) -> String {
        self.run += 1;
        format!("{what}-{}-{}", now_ms(), self.run)
    }

    /// Starts an initiator and `workers` worker processes on their own key
    /// prefix of `redis_url`, delivering to `webhook`.
    async fn deploy(
        &mut self,
        name: &str,
        redis_url: &str,
        workers: usize,
        worker_args: &[&str],
        webhook: &str,
    ) -> Fallible<Deployment> {
        let binary = self.binary()?;
        let base = self.dir.path().join(name);
        let inbox = base.join("inbox");
        std::fs::create_dir_all(&inbox)?;
        let common = |more: &[String]| {
            let mut args = vec![
                "--redis".to_string(),
                redis_url.to_string(),
                "--redis-prefix".into(),
                name.to_string(),
                "--data-dir".into(),
                base.display().to_string(),
                "--webhook-url".into(),
                webhook.to_string(),
            ];
            args.extend(more.iter().cloned());
            args
        };
        let api = free_addr()?;
        let mut initiator = Service::spawn(
            &binary,
            &format!("{name}-initiator"),
            "initiator",
            &common(&["--api-listen".into(), api.to_string()]),
            &base,
        )?;
        initiator.wait_healthy(api).await?;
        let mut started = Vec::new();
        let mut pages = Vec::new();
        for i in 0..workers {
            let metrics = free_addr()?;
            pages.push(format!("http://{metrics}/metrics"));
            let mut args = vec!["--metrics-listen".to_string(), metrics.to_string()];
            args.extend(worker_args.iter().map(|s| s.to_string()));
            let mut worker = Service::spawn(
                &binary,
                &format!("{name}-worker{i}"),
                "worker",
                &common(&args),
                &base,
            )?;
            worker.wait_healthy(metrics).await?;
            started.push(worker);
        }
        let backend = RedisBackend::builder(redis_url)
            .prefix(name)
            .connect()
            .await?;
        let admin = RedisAdmin::connect(redis_url).await?;
        Ok(Deployment {
            inbox,
            initiator,
            workers: started,
            metrics: pages,
            backend,
            admin,
        })
    }

    /// Scenario 1: The bare reqwest loop: the same bodies and headers as `HttpSink`,
    /// the same receiver, the same concurrency, in a process of its own like
    /// the workers (this binary again, with the hidden `--bare-loop`).
    async fn ceiling(&mut self) -> Fallible<()> {
        eprintln!("[1] ceiling: bare reqwest loop");
        let c = self.args.concurrency;
        let n = self.args.lines;
        let name = self.next_name("ceiling");
        let output = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--bare-loop", &self.receiver.url, "--lines", &n.to_string()])
            .args(["--concurrency", &c.to_string(), "--bare-job", &name])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60 + n / 1_000), output)
            .await
            .map_err(|_| "the bare loop did not finish in time")??;
        if !output.status.success() {
            return Err(format!(
                "the bare loop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let rate: f64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
        self.ceiling = Some(rate);
        self.table.add(
            "1 ceiling",
            &format!("bare reqwest, own process, {n} requests, concurrency {c}"),
            rate,
            format!("{rate:.0} req/s"),
            Target::None,
        );
        Ok(())
    }

    /// Scenario 2a: one process, `full_system all` (folder source,
    /// batcher, deliverer, HttpSink, control API) delivering to the
    /// benchmark's receiver, on the memory backend and on its default,
    /// SQLite (the database in the data dir, on this machine's disk),
    /// alternating for `--local-rounds` rounds; the median round of each
    /// is shown, and their ratio.
    async fn e2e_local(&mut self) -> Fallible<()> {
        let rounds = self.args.local_rounds.max(1);
        let (mut memory, mut sqlite) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!(
                "[2] end to end, one process (full_system all), round {round}: memory, then sqlite"
            );
            memory.push(self.e2e_all("memory").await?);
            sqlite.push(self.e2e_all("sqlite").await?);
        }
        let median = |runs: &mut Vec<LocalRun>| {
            runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            runs.swap_remove(runs.len() / 2)
        };
        let (memory, sqlite) = (median(&mut memory), median(&mut sqlite));
        let lines = self.args.lines;
        for (scenario, run) in [("2 e2e memory ×1", &memory), ("2 e2e sqlite ×1", &sqlite)] {
            self.e2e_rows(scenario, lines, run.secs, 0.85, &run.latency);
            self.table.add(
                scenario,
                &format!("peak RSS (the one process; median of {rounds} rounds)"),
                0.0,
                mb(run.peak),
                Target::None,
            );
        }
        let ratio = memory.secs / sqlite.secs;
        self.table.add(
            "2 e2e sqlite ×1",
            &format!("deliveries/s, sqlite / memory (median rounds of {rounds})"),
            100.0 * ratio,
            format!("{:.1}%", 100.0 * ratio),
            Target::AtLeast(90.0, "%"),
        );
        if let Some(db) = sqlite.db {
            self.table.add(
                "2 e2e sqlite ×1",
                "database after the job: file / in use, per line",
                db.file_bytes as f64 / lines as f64,
                format!(
                    "{:.1} / {:.1} bytes ({} file; its high-water mark is the queue, reused)",
                    db.file_bytes as f64 / lines as f64,
                    (db.file_bytes - db.free_bytes) as f64 / lines as f64,
                    mb(db.file_bytes)
                ),
                Target::None,
            );
        }
        Ok(())
    }

    /// One 100,000-line run of `full_system all --backend <backend>`.
    async fn e2e_all(&mut self, backend: &str) -> Fallible<LocalRun> {
        let lines = self.args.lines;
        let name = self.next_name(backend);
        let binary = self.binary()?;
        let base = self.dir.path().join(&name);
        let inbox = base.join("inbox");
        std::fs::create_dir_all(&inbox)?;
        let (api, notifier) = (free_addr()?, free_addr()?);
        let args: Vec<String> = [
            "--backend",
            backend,
            "--data-dir",
            &base.display().to_string(),
            "--webhook-url",
            &self.receiver.url,
            "--api-listen",
            &api.to_string(),
            "--notifier-listen",
            &notifier.to_string(),
            "--concurrency",
            &self.args.concurrency.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut all = Service::spawn(&binary, &format!("{name}-all"), "all", &args, &base)?;
        all.wait_healthy(api).await?;
        let (part, job) = write_users(&inbox, &format!("{name}.csv"), lines, &name)?;
        let start = self.receiver.accepted();
        let landed = now_ms();
        land(&part)?;
        let waited = async {
            self.receiver
                .wait_for(start + lines, Duration::from_secs(60 + lines / 500))
                .await?;
            wait_done_http(api, &job, Duration::from_secs(60)).await
        }
        .await;
        let peak = all.peak_rss().unwrap_or(0);
        let alive = all.check_running();
        let report = explain(waited, &alive)?;
        let latency = latency_histogram(&[format!("http://{api}/metrics")]).await?;
        all.stop().await;
        check_job(&report, lines, &self.receiver)?;
        let secs = seconds_since(landed, &report);
        // The process has stopped (and released the database): measure it.
        let db = match backend {
            "sqlite" => Some(
                wds_sqlite::SqliteBackend::open(base.join("wds.db"))
                    .await?
                    .storage()
                    .await?,
            ),
            _ => None,
        };
        eprintln!(
            "  {backend}: {:.0} deliveries/s ({secs:.2} s)",
            lines as f64 / secs.max(0.001)
        );
        Ok(LocalRun {
            secs,
            latency,
            peak,
            db,
        })
    }

    /// The rows every end-to-end run has.
    fn e2e_rows(
        &mut self,
        scenario: &str,
        lines: u64,
        secs: f64,
        target_ratio: f64,
        latency: &[(f64, u64)],
    ) {
        let rate = lines as f64 / secs.max(0.001);
        self.table.add(
            scenario,
            &format!("{lines} lines, landed → job done"),
            rate,
            format!("{rate:.0} deliveries/s ({secs:.2} s)"),
            Target::None,
        );
        if let Some(ceiling) = self.ceiling {
            let ratio = rate / ceiling;
            self.table.add(
                scenario,
                "ratio to the ceiling",
                100.0 * ratio,
                format!("{:.1}%", 100.0 * ratio),
                Target::AtLeast(100.0 * target_ratio, "%"),
            );
        }
        self.table.add(
            scenario,
            "webhook call latency p50 / p99 (/metrics histogram bucket)",
            0.0,
            format!(
                "{} / {}",
                histogram_quantile(latency, 0.50),
                histogram_quantile(latency, 0.99)
            ),
            Target::None,
        );
    }

    /// Scenario 2b: Redis with `workers` worker processes and an initiator process.
    async fn e2e_redis(&mut self, workers: usize) -> Fallible<()> {
        eprintln!("[2] end to end: Redis backend, {workers} worker(s)");
        let lines = self.args.lines;
        let scenario = format!("2 e2e redis ×{workers}");
        let name = self.next_name(&format!("redis{workers}"));
        let url = self.redis_url();
        let webhook = self.receiver.url.clone();
        let concurrency = self.args.concurrency.to_string();
        let mut d = self
            .deploy(
                &name,
                &url,
                workers,
                &["--concurrency", &concurrency],
                &webhook,
            )
            .await?;
        let (part, job) = write_users(&d.inbox, &format!("{name}.csv"), lines, &name)?;
        let base = self.receiver.accepted();
        d.admin.reset_stats().await?;
        let landed = now_ms();
        land(&part)?;
        let waited = async {
            self.receiver
                .wait_for(base + lines, Duration::from_secs(60 + lines / 500))
                .await?;
            wait_done(&d.backend, &job, Duration::from_secs(60)).await
        }
        .await;
        let commands = d.admin.commands().await;
        let (worker_peak, initiator_peak) = d.peaks();
        let alive = d.check_running();
        let report = explain(waited, &alive)?;
        let commands = commands?;
        let latency = latency_histogram(&d.metrics).await;
        d.stop().await;
        check_job(&report, lines, &self.receiver)?;
        let secs = seconds_since(landed, &report);
        self.e2e_rows(&scenario, lines, secs, 0.70, &latency?);
        self.table.add(
            &scenario,
            "peak RSS: initiator / largest worker",
            0.0,
            format!("{} / {}", mb(initiator_peak), mb(worker_peak)),
            Target::None,
        );
        self.command_rows(&scenario, &commands, lines);
        Ok(())
    }

    fn command_rows(&mut self, scenario: &str, commands: &Commands, lines: u64) {
        let per = |n: u64| n as f64 / lines as f64;
        self.table.add(
            scenario,
            "Redis round trips per message (commands sent by clients: EVALSHA…)",
            per(commands.round_trips),
            format!("{:.4}", per(commands.round_trips)),
            Target::AtMost(0.1, ""),
        );
        self.table.add(
            scenario,
            "Redis commands per message, incl. those run inside Lua",
            per(commands.all),
            format!("{:.3}", per(commands.all)),
            Target::None,
        );
        if self.args.verbose {
            for (name, n) in &commands.by_name {
                eprintln!("    {name:<24} {n:>10}  {:.4}/message", per(*n));
            }
        }
    }

    /// Scenario 3: A receiver answering after 100 ms: 1, 2 and 4 workers at
    /// concurrency 128, against workers × 128 / 0.1 s.
    async fn scaling(&mut self) -> Fallible<()> {
        eprintln!("[3] latency-bound scaling: receiver answers after 100 ms");
        let slow = BenchReceiver::start(
            self.dir.path(),
            "slow-receiver",
            Some(Duration::from_millis(100)),
            true,
            self.t0,
        )
        .await?;
        let seconds = if self.args.full { 15 } else { 5 };
        let url = self.redis_url();
        let result = async {
            for workers in [1u64, 2, 4] {
                let ideal = workers as f64 * 128.0 / 0.1;
                let lines = (ideal as u64) * seconds;
                let name = self.next_name(&format!("scaling{workers}"));
                let mut d = self
                    .deploy(
                        &name,
                        &url,
                        workers as usize,
                        &["--concurrency", "128"],
                        &slow.url,
                    )
                    .await?;
                let (part, job) = write_users(&d.inbox, &format!("{name}.csv"), lines, &name)?;
                let (base, from) = (slow.accepted(), slow.noted());
                land(&part)?;
                let waited = slow
                    .wait_for(base + lines, Duration::from_secs(120 + 2 * seconds))
                    .await;
                let alive = d.check_running();
                explain(waited, &alive)?;
                let report = wait_done(&d.backend, &job, Duration::from_secs(60)).await?;
                d.stop().await;
                check_job(&report, lines, &slow)?;
                let mut times = slow.times_from(from);
                times.sort_unstable();
                let span = times
                    .last()
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(times.first().copied().unwrap_or(0));
                let rate = times.len().saturating_sub(1) as f64 / (span as f64 / 1e6).max(1e-3);
                self.table.add(
                    "3 scaling (100 ms API)",
                    &format!(
                        "{workers} worker(s) × 128, {lines} lines: deliveries/s (ideal {ideal:.0})"
                    ),
                    100.0 * rate / ideal,
                    format!("{rate:.0}/s = {:.1}% of ideal", 100.0 * rate / ideal),
                    Target::AtLeast(90.0, "%"),
                );
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        slow.stop().await;
        result
    }

    /// Scenario 4: 1,000/s with burst 50, shared by four workers through Redis.
    async fn ratelimit(&mut self) -> Fallible<()> {
        eprintln!("[4] rate-limit accuracy: 1,000/s, four workers");
        let (rate, burst) = (1_000u64, 50u64);
        let seconds = if self.args.full { 30 } else { 10 };
        let lines = rate * seconds;
        let url = self.redis_url();
        let webhook = self.receiver.url.clone();
        let name = self.next_name("ratelimit");
        let mut d = self
            .deploy(
                &name,
                &url,
                4,
                &["--rate", &rate.to_string(), "--burst", &burst.to_string()],
                &webhook,
            )
            .await?;
        let (part, job) = write_users(&d.inbox, &format!("{name}.csv"), lines, &name)?;
        let (base, from) = (self.receiver.accepted(), self.receiver.noted());
        land(&part)?;
        let waited = self
            .receiver
            .wait_for(base + lines, Duration::from_secs(60 + 2 * seconds))
            .await;
        let alive = d.check_running();
        explain(waited, &alive)?;
        let report = wait_done(&d.backend, &job, Duration::from_secs(60)).await?;
        d.stop().await;
        check_job(&report, lines, &self.receiver)?;
        let mut times = self.receiver.times_from(from);
        times.sort_unstable();
        let (first, last) = (times[0], times[times.len() - 1]);
        // Steady state: after the first second, which may hold the burst.
        let steady: Vec<u64> = times
            .iter()
            .copied()
            .filter(|t| *t >= first + 1_000_000)
            .collect();
        let steady_rate = match (steady.first(), steady.last()) {
            (Some(a), Some(b)) if b > a => (steady.len() - 1) as f64 / ((b - a) as f64 / 1e6),
            _ => 0.0,
        };
        let whole = (times.len() - 1) as f64 / ((last - first) as f64 / 1e6).max(1e-3);
        let mut max_window = 0usize;
        let mut start = 0;
        for (end, t) in times.iter().enumerate() {
            while times[start] + 1_000_000 <= *t {
                start += 1;
            }
            max_window = max_window.max(end - start + 1);
        }
        let scenario = "4 rate limit 1000/s ×4";
        self.table.add(
            scenario,
            &format!("achieved rate after the first second, % of the limit ({lines} lines)"),
            steady_rate / rate as f64 * 100.0,
            format!(
                "{steady_rate:.1}/s = {:.1}%",
                steady_rate / rate as f64 * 100.0
            ),
            Target::Between(97.0, 100.0, "%"),
        );
        self.table.add(
            scenario,
            "whole-run rate, first to last delivery (includes the burst)",
            0.0,
            format!("{whole:.1}/s"),
            Target::None,
        );
        self.table.add(
            scenario,
            "largest count in any 1 s window",
            max_window as f64,
            format!("{max_window}"),
            Target::AtMost((rate + burst) as f64, ""),
        );
        Ok(())
    }

    /// Scenario 5: A big file through Redis on a server of its own (so its peak
    /// memory is this file's): worker and initiator peak RSS, Redis peak.
    async fn big(&mut self) -> Fallible<()> {
        let lines = self.args.big_lines.unwrap_or(if self.args.full {
            10_000_000
        } else {
            1_000_000
        });
        eprintln!("[5] big file: {lines} lines through Redis, one worker");
        let server = RedisServer::start();
        // Only counts: 8 bytes per answer would be the benchmark's own memory.
        let receiver =
            BenchReceiver::start(self.dir.path(), "big-receiver", None, false, self.t0).await?;
        let name = self.next_name("big");
        let concurrency = self.args.concurrency.to_string();
        let result = async {
            let mut d = self
                .deploy(
                    &name,
                    &server.url(),
                    1,
                    &["--concurrency", &concurrency],
                    &receiver.url,
                )
                .await?;
            let (part, job) = write_users(&d.inbox, &format!("{name}.csv"), lines, &name)?;
            let landed = now_ms();
            land(&part)?;
            // Bounded: at least 500 deliveries/s, or the run fails.
            let waited = receiver
                .wait_for(lines, Duration::from_secs(120 + lines / 500))
                .await;
            let alive = d.check_running();
            explain(waited, &alive)?;
            let report = wait_done(&d.backend, &job, Duration::from_secs(120)).await?;
            let (worker_peak, initiator_peak) = d.peaks();
            let redis_peak = d.admin.memory("used_memory_peak").await?;
            let redis_after = d.admin.memory("used_memory").await?;
            d.stop().await;
            check_job(&report, lines, &receiver)?;
            let secs = seconds_since(landed, &report);
            let scenario = format!("5 big file {lines} lines");
            self.table.add(
                &scenario,
                "throughput, landed → job done",
                0.0,
                format!(
                    "{:.0} deliveries/s ({secs:.0} s)",
                    lines as f64 / secs.max(0.001)
                ),
                Target::None,
            );
            self.table.add(
                &scenario,
                "worker peak RSS (MB)",
                worker_peak as f64 / 1e6,
                mb(worker_peak),
                Target::AtMost(100.0, " MB"),
            );
            self.table.add(
                &scenario,
                "initiator peak RSS",
                0.0,
                mb(initiator_peak),
                Target::None,
            );
            self.table.add(
                &scenario,
                "Redis used_memory_peak / used_memory after",
                0.0,
                format!("{} / {}", mb(redis_peak), mb(redis_after)),
                Target::None,
            );
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        receiver.stop().await;
        drop(server);
        result
    }

    /// Scenario 6: Time from a file's rename into the inbox to its first delivery,
    /// with an idle initiator and worker on Redis.
    async fn ttfd(&mut self) -> Fallible<()> {
        eprintln!("[6] time to first delivery");
        let url = self.redis_url();
        let webhook = self.receiver.url.clone();
        let name = self.next_name("ttfd");
        let mut d = self.deploy(&name, &url, 1, &[], &webhook).await?;
        let mut samples = Vec::new();
        let result = async {
            for run in 0..self.args.ttfd_runs {
                let lines = 100;
                let (part, _job) = write_users(
                    &d.inbox,
                    &format!("{name}-{run}.csv"),
                    lines,
                    &format!("{name}-{run}"),
                )?;
                // Idle long enough for the worker's polling to reach its slowest pace.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (base, from) = (self.receiver.accepted(), self.receiver.noted());
                let landed = self.t0.elapsed().as_micros() as u64;
                land(&part)?;
                self.receiver
                    .wait_for(base + lines, Duration::from_secs(30))
                    .await?;
                let first = self
                    .receiver
                    .times_from(from)
                    .into_iter()
                    .min()
                    .unwrap_or(landed);
                samples.push(first.saturating_sub(landed) / 1_000);
            }
            d.check_running()
        }
        .await;
        d.stop().await;
        result?;
        samples.sort_unstable();
        let median = quantile(&samples, 0.5);
        let max = samples.last().copied().unwrap_or(0);
        self.table.add(
            "6 first delivery",
            &format!(
                "rename → first webhook, Redis, idle worker: median of {} runs",
                samples.len()
            ),
            median as f64,
            format!("{median} ms"),
            Target::AtMost(200.0, " ms"),
        );
        self.table.add(
            "6 first delivery",
            "worst run",
            max as f64,
            format!("{max} ms (all: {samples:?})"),
            Target::AtMost(200.0, " ms"),
        );
        Ok(())
    }
}

/// Posts `n` webhooks with `concurrency` tasks through one reqwest client;
/// returns requests/s. Every request must be accepted.
async fn bare_loop(url: &str, job: &str, n: u64, concurrency: usize) -> Fallible<f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = reqwest::Url::parse(url)?;
    let next = Arc::new(AtomicUsize::new(1));
    let job = JobId::new(job);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next, job) = (client.clone(), url.clone(), next.clone(), job.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i > n {
                    return Ok::<_, String>(());
                }
                let message = Message::fresh(
                    &job,
                    i + 1,
                    format!("user-{i}"),
                    format!("{}: your order #{i} has shipped", job),
                );
                let body = HttpSink::body(&message).map_err(|e| e.to_string())?;
                let ts = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let response = client
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .header(wds_http::WEBHOOK_ID, message.id.to_string())
                    .header(wds_http::WEBHOOK_TIMESTAMP, ts.to_string())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                response.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("the receiver answered {status}"));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// One line about the machine and its load, for the report.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} GB", kb as f64 / 1e6));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores, {mem} RAM, Linux {}, load {}",
        kernel.trim(),
        load()
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Fallible<()> {
    let args = Args::parse();
    if let Some(url) = &args.bare_loop {
        // Warm up (connections, allocator), then measure.
        bare_loop(
            url,
            &format!("{}-warmup", args.bare_job),
            (args.lines / 10).max(1),
            args.concurrency,
        )
        .await?;
        let rate = bare_loop(url, &args.bare_job, args.lines, args.concurrency).await?;
        println!("{rate}");
        return Ok(());
    }
    let started = Instant::now();
    eprintln!("machine: {}", machine());
    let dir = tempfile::Builder::new().prefix("wds-bench-").tempdir()?;
    let t0 = Instant::now();
    let receiver = BenchReceiver::start(dir.path(), "receiver", None, true, t0).await?;
    let mut bench = Bench {
        args,
        dir,
        t0,
        receiver,
        binary: None,
        redis: None,
        ceiling: None,
        table: Table::default(),
        run: 0,
    };
    let outcome = async {
        if bench.wants(Scenario::Ceiling) || bench.wants(Scenario::E2e) {
            bench.ceiling().await?;
        }
        if bench.wants(Scenario::E2e) {
            bench.e2e_local().await?;
            bench.e2e_redis(1).await?;
            bench.e2e_redis(2).await?;
        }
        if bench.wants(Scenario::Scaling) {
            bench.scaling().await?;
        }
        if bench.wants(Scenario::Ratelimit) {
            bench.ratelimit().await?;
        }
        if bench.wants(Scenario::Big) {
            bench.big().await?;
        }
        if bench.wants(Scenario::Ttfd) {
            bench.ttfd().await?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    println!();
    println!("machine: {} (at the end)", machine());
    println!(
        "run: {:.0} s; concurrency {} per worker; batch size 100; settle time 500 ms (defaults); \
         redis-server without persistence",
        started.elapsed().as_secs_f64(),
        bench.args.concurrency
    );
    println!();
    bench.table.print();
    let receiver = bench.receiver;
    receiver.stop().await;
    outcome
}

/// A failed wait, explained by the process that died when one did: "timed
/// out" alone would hide the cause.
fn explain<T>(waited: Fallible<T>, alive: &Fallible<()>) -> Fallible<T> {
    waited.map_err(|e| match alive {
        Err(dead) => format!("{e}; {dead}").into(),
        Ok(()) => e,
    })
}

/// Seconds from `landed` (ms) until the job finished (or now, if it has not).
fn seconds_since(landed: u64, report: &JobReport) -> f64 {
    report
        .finished_ms
        .unwrap_or_else(now_ms)
        .saturating_sub(landed) as f64
        / 1e3
}
