//! The engine over one Redis server next to a Redis Cluster: throughput,
//! and the CPU each delivered message costs every redis-server.
//!
//! ```text
//! cargo run --release -p wds-redis --features test-server --example cluster_bench [lines] [jobs]
//! ```
//!
//! Starts a private redis-server and a private cluster of three masters
//! with one replica each (`RedisCluster`), then delivers `lines` (default
//! 120,000) lines a round, as `jobs` (default 6) jobs at once, each run by
//! an engine of its own (`Engine::run_once`) with a sink that does nothing:
//! five measured rounds of each setup, alternating:
//!
//! - `single`: one server, one key shard (the default there);
//! - `single 16 shards`: one server, jobs spread over 16 key shards as on
//!   the cluster (what the shards themselves cost: more lease calls);
//! - `cluster`: the cluster, jobs spread over its 16 key shards (the
//!   default), each mark waiting for a replica (`WAIT`, the default with
//!   replicas);
//! - `cluster no WAIT`: the same, marks not waited for.
//!
//! It prints messages per second (median and best rounds), the ratio of
//! each cluster setup to the single server, the CPU seconds per message of
//! each redis-server process (from `/proc/<pid>/stat`) with the jobs each
//! master held, and projects the rate N masters would sustain from the
//! CPU a message costs a master.

use std::collections::BTreeMap;
use std::time::Duration;

use wds_core::testkit::bench::{csv_input, median_and_best, stat_cpu, timed_job, NoopSink};
use wds_core::{Engine, EngineConfig};
use wds_redis::{RedisBackend, RedisCluster, RedisServer};

/// Measured rounds of each setup, alternating.
const ROUNDS: usize = 5;

/// CPU seconds a process has used so far; 0 when it is gone.
fn cpu_of(pid: Option<u32>) -> f64 {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map_or(0.0, |stat| stat_cpu(&stat))
}

/// One setup: its name, an engine per concurrent job (all on one
/// backend), and the redis-server processes it uses.
struct Setup {
    name: &'static str,
    engines: Vec<Engine>,
    backend: RedisBackend,
    pids: Vec<Option<u32>>,
}

/// Runs `jobs` jobs of `lines` lines at once, one per engine; the wall
/// seconds until the last is done, and the job ids.
async fn round(
    setup: &Setup,
    lines: u64,
    salt: &str,
) -> Result<(f64, Vec<wds_core::JobId>), Box<dyn std::error::Error>> {
    let inputs: Vec<_> = (0..setup.engines.len())
        .map(|j| csv_input(lines, &format!("{salt}-{j}")))
        .collect();
    let start = std::time::Instant::now();
    let runs = setup
        .engines
        .iter()
        .zip(&inputs)
        .map(|(engine, input)| async move {
            // As text: the join holds finished results across awaits.
            timed_job(engine, input).await.map_err(|e| e.to_string())
        });
    let done = futures::future::try_join_all(runs).await?;
    Ok((
        start.elapsed().as_secs_f64(),
        done.into_iter().map(|(report, _)| report.job).collect(),
    ))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let lines: u64 = args.next().map_or(Ok(120_000), |n| n.parse())?;
    let jobs: usize = args.next().map_or(Ok(6), |n| n.parse())?;
    let per_job = lines / jobs as u64;
    let single = RedisServer::start();
    let mut cluster = RedisCluster::start(3, 1);
    let prefix = "bench";
    let config = EngineConfig::default();
    println!(
        "{} lines a round as {jobs} jobs at once, noop sink; engine: concurrency {}, batch \
         size {}; cluster: 3 masters + 3 replicas on this machine",
        per_job * jobs as u64,
        config.concurrency,
        config.batch_size
    );
    let engines = |backend: &RedisBackend| {
        (0..jobs)
            .map(|_| {
                Engine::builder()
                    .config(config.clone())
                    .backend(backend.clone())
                    .sink(NoopSink)
                    .build()
            })
            .collect::<wds_core::Result<Vec<_>>>()
    };
    let single_backend = RedisBackend::builder(single.url())
        .prefix(prefix)
        .connect()
        .await?;
    let single_sharded = RedisBackend::builder(single.url())
        .prefix(format!("{prefix}-sharded"))
        .shards(wds_redis::CLUSTER_SHARDS)
        .connect()
        .await?;
    let waiting = RedisBackend::builder(cluster.url())
        .prefix(prefix)
        .connect()
        .await?;
    let not_waiting = RedisBackend::builder(cluster.url())
        .prefix(format!("{prefix}-nowait"))
        .wait_for_replicas(0, Duration::ZERO)
        .connect()
        .await?;
    let nodes: Vec<(u16, Option<u32>)> = cluster
        .nodes()
        .iter()
        .map(|n| (n.port(), n.pid()))
        .collect();
    let node_pids: Vec<Option<u32>> = nodes.iter().map(|(_, pid)| *pid).collect();
    let setups = [
        Setup {
            name: "single",
            engines: engines(&single_backend)?,
            backend: single_backend,
            pids: vec![single.pid()],
        },
        Setup {
            name: "single 16 shards",
            engines: engines(&single_sharded)?,
            backend: single_sharded,
            pids: vec![single.pid()],
        },
        Setup {
            name: "cluster",
            engines: engines(&waiting)?,
            backend: waiting.clone(),
            pids: node_pids.clone(),
        },
        Setup {
            name: "cluster no WAIT",
            engines: engines(&not_waiting)?,
            backend: not_waiting,
            pids: node_pids,
        },
    ];
    for setup in &setups {
        round(
            setup,
            per_job / 10,
            &format!("warm-{}", setup.name.replace(' ', "-")),
        )
        .await?;
    }
    let mut secs = vec![Vec::new(); setups.len()];
    let mut cpu = vec![vec![0.0; nodes.len()]; setups.len()];
    // Messages each cluster node served as master, per setup.
    let mut served = vec![BTreeMap::<u16, u64>::new(); setups.len()];
    for r in 0..ROUNDS {
        for (i, setup) in setups.iter().enumerate() {
            let before: Vec<f64> = setup.pids.iter().map(|p| cpu_of(*p)).collect();
            let salt = format!(
                "{}-{r}-{}",
                setup.name.replace(' ', "-"),
                wds_core::backend::now_ms()
            );
            let (s, ids) = round(setup, per_job, &salt).await?;
            for (j, pid) in setup.pids.iter().enumerate() {
                cpu[i][j] += cpu_of(*pid) - before[j];
            }
            secs[i].push(s);
            if setup.pids.len() > 1 {
                for id in &ids {
                    if let Some(port) = cluster.master_of(setup.backend.job_key_prefix(id)) {
                        *served[i].entry(port).or_default() += per_job;
                    }
                }
            }
        }
    }
    let measured = (per_job * jobs as u64) as f64 * ROUNDS as f64;
    let mut medians = Vec::new();
    for (i, setup) in setups.iter().enumerate() {
        let (median, best) = median_and_best(&mut secs[i]);
        medians.push(median);
        let per_round = (per_job * jobs as u64) as f64;
        println!(
            "{:<17} {:>8.0} messages/s (median of {ROUNDS}; best {:.0}/s){}",
            setup.name,
            per_round / median,
            per_round / best,
            if i == 0 {
                String::new()
            } else {
                format!("  = {:.0}% of single", 100.0 * medians[0] / median)
            }
        );
    }
    println!("redis-server CPU per message delivered (µs):");
    for (i, setup) in setups.iter().enumerate() {
        if setup.pids.len() == 1 {
            println!("  {:<17} {:.2}", setup.name, cpu[i][0] * 1e6 / measured);
            continue;
        }
        let total: f64 = cpu[i].iter().sum();
        println!("  {:<17} {:.2} in all", setup.name, total * 1e6 / measured);
        let mut master_cpu = 0.0;
        for ((port, _), c) in nodes.iter().zip(&cpu[i]) {
            match served[i].get(port) {
                Some(&messages) => {
                    master_cpu += c;
                    println!(
                        "    master :{port}: {messages} messages of its jobs, {:.2} µs each",
                        c * 1e6 / messages as f64
                    );
                }
                None => println!(
                    "    node :{port} (replica, or a master of no job): {:.2} µs a message",
                    c * 1e6 / measured
                ),
            }
        }
        let per_message = master_cpu / measured;
        if per_message > 0.0 {
            println!(
                "    projection: a master's core saturates at about {:.0} messages/s of its \
                 jobs; N masters about N times that ({} masters held jobs here)",
                1.0 / per_message,
                served[i].len()
            );
        }
    }
    println!(
        "marks not acknowledged by a replica in time: {}",
        waiting.unreplicated_marks()
    );
    Ok(())
}
