//! Throughput of the engine over the Redis backend, next to the in-memory
//! one, and the Redis commands each delivered message costs.
//!
//! ```text
//! cargo run --release -p wds-redis --features test-server --example redis_bench [lines]
//! ```
//!
//! Starts its own redis-server, pushes one job of `lines` (default 100,000)
//! lines through `Engine::run_once` with a sink that does nothing, first on
//! `wds_memory::MemoryBackend`, then on `RedisBackend`, and prints
//! messages per second for each, their ratio, and from `INFO commandstats`
//! (reset before the Redis run) the round trips per message (commands the
//! clients sent) and all commands per message (including those the Lua
//! scripts ran inside Redis).
//!
//! Each backend runs seven measured rounds, alternating, and the median
//! round of each is compared, the best rounds printed too: a 100,000-line
//! run takes a fraction of a second, so one round alone is at the mercy of
//! the machine's other work. It also prints the CPU each message cost this
//! process and redis-server (both share the machine's cores).
//!
//! Environment: `WDS_BENCH_BATCH` and `WDS_BENCH_CONCURRENCY` set the
//! engine's batch size and concurrency for both runs; `WDS_BENCH_IN_FLIGHT=n` sets the engine's
//! `batches_in_flight` for both runs (default: twice the sending window of
//! `concurrency / batch_size + 2` batches, so 4); `WDS_BENCH_IDLE_MS` sets
//! the engine's `idle_poll`; `WDS_BENCH_POOL` sets the
//! Redis backend's `pool_size`; `WDS_BENCH_REDIS_URL` uses your server instead of starting one
//! (its statistics are reset); `WDS_BENCH_VERBOSE=1` prints the whole
//! `INFO commandstats`.

use std::collections::BTreeMap;

use wds_core::testkit::bench::{csv_input, median_and_best, process_cpu, timed_job, NoopSink};
use wds_core::{Engine, EngineConfig, Input};
use wds_memory::MemoryBackend;
use wds_redis::redis;
use wds_redis::{RedisBackend, RedisServer};

/// Measured rounds of each backend, alternating.
const ROUNDS: u64 = 7;

/// A CSV job of `lines` distinct users; `salt` makes each run a new job
/// (and the run's start time makes it new on a server that already ran the
/// benchmark, where the same job would be found done at once).
fn input(lines: u64, salt: &str) -> Input {
    static RUN: std::sync::LazyLock<u64> = std::sync::LazyLock::new(wds_core::backend::now_ms);
    csv_input(lines, &format!("{salt}-{}", *RUN))
}

/// CPU seconds the Redis server has used so far (`INFO cpu`).
async fn redis_cpu(
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<f64, Box<dyn std::error::Error>> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(admin).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user") + field("used_cpu_sys"))
}

/// `cmdstat_<name>` → calls, from `INFO commandstats`.
fn command_calls(info: &str) -> BTreeMap<String, u64> {
    if std::env::var_os("WDS_BENCH_VERBOSE").is_some() {
        eprintln!("{info}");
    }
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lines: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    // WDS_BENCH_REDIS_URL points the benchmark at a server of your own
    // (its command statistics are reset!); by default it starts one.
    let server = match std::env::var("WDS_BENCH_REDIS_URL") {
        Ok(_) => None,
        Err(_) => Some(RedisServer::start()),
    };
    let url = match &server {
        Some(server) => server.url(),
        None => std::env::var("WDS_BENCH_REDIS_URL")?,
    };
    println!("redis-server on {url}; {lines} lines, noop sink");

    // WDS_BENCH_IN_FLIGHT sets `batches_in_flight` for both engines (the
    // default, 0, means twice the sending window: 4).
    let mut config = EngineConfig::default();
    if let Ok(n) = std::env::var("WDS_BENCH_IN_FLIGHT") {
        config.batches_in_flight = n.parse()?;
    }
    if let Ok(n) = std::env::var("WDS_BENCH_BATCH") {
        config.batch_size = n.parse()?;
    }
    if let Ok(n) = std::env::var("WDS_BENCH_CONCURRENCY") {
        config.concurrency = n.parse()?;
    }
    if let Ok(n) = std::env::var("WDS_BENCH_IDLE_MS") {
        config.idle_poll = std::time::Duration::from_millis(n.parse()?);
    }
    println!(
        "engine: concurrency {}, batch size {}, {} batches in flight",
        config.concurrency,
        config.batch_size,
        config.effective_batches_in_flight()
    );
    let memory = Engine::builder()
        .config(config.clone())
        .backend(MemoryBackend::default())
        .sink(NoopSink)
        .build()?;
    let mut backend = RedisBackend::builder(url.clone()).prefix("bench");
    if let Ok(n) = std::env::var("WDS_BENCH_POOL") {
        backend = backend.pool_size(n.parse()?);
    }
    let backend = backend.connect().await?;
    let engine = Engine::builder()
        .config(config)
        .backend(backend)
        .sink(NoopSink)
        .build()?;
    // Warm up both (allocator, thread pool, scripts), then alternate the
    // measured rounds so both see the same machine; keep the best of each.
    timed_job(&memory, &input(lines / 10, "warm-memory")).await?;
    timed_job(&engine, &input(lines / 10, "warm-redis")).await?;
    let client = redis::Client::open(url.as_str())?;
    let mut admin = client.get_multiplexed_async_connection().await?;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut admin)
        .await?;
    let (mut memory_secs, mut redis_secs) = (Vec::new(), Vec::new());
    // CPU seconds over all measured rounds: of this process in the memory
    // runs, and of this process and of redis-server in the Redis runs.
    let (mut memory_cpu, mut client_cpu, mut server_cpu) = (0.0, 0.0, 0.0);
    for round in 0..ROUNDS {
        let memory_input = input(lines, &format!("memory-{round}"));
        let redis_input = input(lines, &format!("redis-{round}"));
        let cpu = process_cpu();
        let (_, m) = timed_job(&memory, &memory_input).await?;
        memory_cpu += process_cpu() - cpu;
        let (cpu, server) = (process_cpu(), redis_cpu(&mut admin).await?);
        let (_, r) = timed_job(&engine, &redis_input).await?;
        client_cpu += process_cpu() - cpu;
        server_cpu += redis_cpu(&mut admin).await? - server;
        println!("round {round}: memory {m:.3} s, redis {r:.3} s");
        memory_secs.push(m);
        redis_secs.push(r);
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await?;
    // The median round of each backend: one lucky or unlucky round (the
    // machine is shared) moves it least. The best rounds are shown too.
    let (memory_median, memory_best) = median_and_best(&mut memory_secs);
    let (redis_median, redis_best) = median_and_best(&mut redis_secs);
    let rate = |secs: f64| lines as f64 / secs;
    for (name, median, best) in [
        ("memory", memory_median, memory_best),
        ("redis", redis_median, redis_best),
    ] {
        println!(
            "{name:<7} {median:>6.3} s  {:>8.0} messages/s (median of {ROUNDS}; best {:.0}/s)",
            rate(median),
            rate(best)
        );
    }
    println!(
        "ratio redis/memory: {:.0}% (target >= 50%; of the best rounds: {:.0}%)",
        100.0 * memory_median / redis_median,
        100.0 * memory_best / redis_best
    );
    // The statistics cover every measured Redis round.
    let lines = lines * ROUNDS;
    let per_message = |cpu: f64| cpu * 1e6 / lines as f64;
    println!(
        "CPU per message: memory {:.2} us; redis {:.2} us (this process {:.2} + redis-server {:.2})",
        per_message(memory_cpu),
        per_message(client_cpu + server_cpu),
        per_message(client_cpu),
        per_message(server_cpu),
    );

    let calls = command_calls(&info);
    // What the benchmark itself asked for is not the backend's cost.
    let ours = |name: &str| name == "info" || name.starts_with("config");
    // Every backend call is an EVALSHA (EVAL and SCRIPT LOAD only after a
    // NOSCRIPT); everything else ran inside a script.
    let sent_by_clients = ["evalsha", "eval", "script|load", "ping"];
    let round_trips: u64 = calls
        .iter()
        .filter(|(name, _)| sent_by_clients.contains(&name.as_str()))
        .map(|(_, n)| n)
        .sum();
    let all: u64 = calls
        .iter()
        .filter(|(name, _)| !ours(name))
        .map(|(_, n)| n)
        .sum();
    println!("commands during the Redis run (INFO commandstats):");
    for (name, n) in calls.iter().filter(|(name, _)| !ours(name)) {
        println!("  {name:<16} {n:>9}");
    }
    println!(
        "round trips per message: {:.4} (evalsha {} + other client commands; target <= 0.1)",
        round_trips as f64 / lines as f64,
        calls.get("evalsha").copied().unwrap_or(0)
    );
    println!(
        "all commands per message, including those run inside scripts: {:.4}",
        all as f64 / lines as f64
    );
    Ok(())
}
