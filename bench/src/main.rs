//! The WDS benchmark: every figure of `docs/performance.md`, measured side
//! by side in one run, printed as a markdown table with the targets.
//!
//! ```text
//! cargo run --release -p wds-bench                        # everything, quick sizes
//! cargo run --release -p wds-bench -- --full              # the issue's sizes (10M-line big file)
//! cargo run --release -p wds-bench -- --only ceiling,e2e  # some scenarios
//! cargo run --release -p wds-bench -- --help
//! ```
//!
//! It starts its own webhook receiver (the product's `Receiver`, in this
//! process) and its own `redis-server` (without persistence), and runs the
//! services under test as separate processes of the release `full_system`
//! binary (built first), so each has its own peak RSS. Each scenario is a
//! file of `scenarios/`; the processes, ports, receiver and Redis come from
//! `wds-harness`, which the end-to-end tests share:
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
//! 7. `cost`: the cost per delivery against a minimal responder (its own
//!    process, reading each body and answering 200, nothing else): bare
//!    reqwest and raw hyper loops, `full_system all` (SQLite) and Redis
//!    with one worker, alternating for `--cost-rounds` rounds; rates,
//!    their spread, and the CPU per delivery of every process involved.
//!
//! Every wait is bounded; everything listens on 127.0.0.1 only.

mod deploy;
mod machine;
mod responder;
mod scenarios;
mod table;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use wds_core::{backend::now_ms, JobReport};
use wds_harness::process::build_full_system;
use wds_harness::receiver::ProductReceiver;
use wds_harness::redis::RedisServer;

use crate::table::Table;

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
    /// 7: cost per delivery against a minimal responder: bare reqwest and
    /// hyper loops, `all` and Redis ×1, CPU per delivery of each process.
    Cost,
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
    /// Internal: the bare loop's HTTP client.
    #[arg(long, hide = true, value_enum, default_value = "reqwest")]
    bare_client: scenarios::Client,
    /// Internal: the bare loop signs every request as `HttpSink` does with
    /// one secret (a `webhook-signature` header).
    #[arg(long, hide = true)]
    bare_sign: bool,
    /// Internal: run the bare loop on this many threads, each with a
    /// current-thread runtime and its share of the concurrency (0: one
    /// multi-threaded runtime).
    #[arg(long, hide = true, default_value_t = 0)]
    bare_threads: usize,
    /// Internal: run only the minimal responder (scenario 7), on an
    /// ephemeral loopback port it prints.
    #[arg(long, hide = true)]
    responder: bool,
    /// Rounds of scenario 7 (`cost`), each client and setup once a round.
    #[arg(long, default_value_t = 5)]
    cost_rounds: usize,
}

/// Everything a scenario needs.
struct Bench {
    args: Args,
    dir: tempfile::TempDir,
    t0: Instant,
    receiver: ProductReceiver,
    binary: Option<PathBuf>,
    redis: Option<RedisServer>,
    /// Deliveries/s of the bare loop, once measured.
    ceiling: Option<f64>,
    table: Table,
    /// Distinguishes files and Redis prefixes of one run.
    run: u64,
}

impl Bench {
    fn wants(&self, s: Scenario) -> bool {
        self.args.only.is_empty() || self.args.only.contains(&s)
    }

    fn binary(&mut self) -> Fallible<PathBuf> {
        if self.binary.is_none() {
            self.binary = Some(full_system()?);
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
}

/// The `full_system` binary of this build's profile, built first (a no-op
/// when it is up to date); `WDS_BENCH_FULL_SYSTEM` names another binary.
/// When the build fails but a binary is there, that one is used, with a
/// warning.
fn full_system() -> Fallible<PathBuf> {
    if let Some(path) = std::env::var_os("WDS_BENCH_FULL_SYSTEM") {
        return Ok(PathBuf::from(path));
    }
    let release = !cfg!(debug_assertions);
    eprintln!(
        "building full_system ({})…",
        if release { "release" } else { "debug" }
    );
    match build_full_system(release) {
        Ok(binary) => Ok(binary),
        Err(e) => {
            // Where cargo puts it: next to this binary's folder.
            let existing = std::env::current_exe()?
                .parent()
                .map(|dir| dir.join("examples").join("full_system"))
                .filter(|bin| bin.exists())
                .ok_or(e.clone())?;
            eprintln!("warning: {e}\nusing the existing {}", existing.display());
            Ok(existing)
        }
    }
}

/// The allocator of `full_system`, so that the bare loops and the
/// responder compare with it on equal terms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Fallible<()> {
    let args = Args::parse();
    if args.responder {
        // One thread, like `wrk -t1`: the receiving side takes at most one
        // core of this 2-core machine, and its threads do not wake each
        // other across cores.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            responder::serve(listener).await
        });
    }
    if let Some(url) = &args.bare_loop {
        let spec = scenarios::LoopSpec {
            client: args.bare_client,
            sign: args.bare_sign,
            threads: args.bare_threads,
        };
        let run =
            scenarios::bare_loop_process(spec, url, &args.bare_job, args.lines, args.concurrency)?;
        println!("{} {}", run.rate, run.cpu_secs);
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Fallible<()> {
    let started = Instant::now();
    eprintln!("machine: {}", machine::machine());
    let dir = tempfile::Builder::new().prefix("wds-bench-").tempdir()?;
    let t0 = Instant::now();
    let receiver = ProductReceiver::start(dir.path(), "receiver", None, true, t0).await?;
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
        if bench.wants(Scenario::Cost) {
            bench.cost().await?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    println!();
    println!("machine: {} (at the end)", machine::machine());
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
pub(crate) fn explain<T>(waited: Fallible<T>, alive: &Fallible<()>) -> Fallible<T> {
    waited.map_err(|e| match alive {
        Err(dead) => format!("{e}; {dead}").into(),
        Ok(()) => e,
    })
}

/// Seconds from `landed` (ms) until the job finished (or now, if it has not).
pub(crate) fn seconds_since(landed: u64, report: &JobReport) -> f64 {
    report
        .finished_ms
        .unwrap_or_else(now_ms)
        .saturating_sub(landed) as f64
        / 1e3
}
