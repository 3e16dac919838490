//! The engine over one Redis server next to a Redis Cluster: throughput,
//! and the CPU each delivered message costs every redis-server.
//!
//! ```text
//! cargo run --release -p wds-redis --features test-server --example cluster_bench [lines]
//! ```
//!
//! Starts a private redis-server and a private cluster of three masters
//! with one replica each (`RedisCluster`), then pushes jobs of `lines`
//! (default 100,000) lines through `Engine::run_once` with a sink that does
//! nothing, five measured rounds of each setup, alternating:
//!
//! - `single`: one server;
//! - `cluster`: the cluster, each mark waiting for a replica (`WAIT`, the
//!   default with replicas);
//! - `cluster no WAIT`: the cluster, marks not waited for.
//!
//! It prints messages per second (median and best rounds), the ratio of
//! each cluster setup to the single server, and the CPU seconds per
//! message of each redis-server process (from `/proc/<pid>/stat`): the
//! cluster's master holding the deployment's keys, its replica, and the
//! other nodes. A deployment's keys share one hash tag, so one master does
//! all the work; the last line projects what spreading jobs over shards
//! would give.

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

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lines: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let single = RedisServer::start();
    let mut cluster = RedisCluster::start(3, 1);
    let prefix = "bench";
    let tag = format!("{{{prefix}}}");
    let master = cluster
        .master_of(&tag)
        .ok_or("no master serves the bench's slot")?;
    let replicas = cluster.replicas_of(&tag);
    let mut nodes: Vec<(String, Option<u32>)> = Vec::new();
    for node in cluster.nodes().iter() {
        let role = if node.port() == master {
            "master of the keys"
        } else if replicas.contains(&node.port()) {
            "its replica"
        } else {
            "other node"
        };
        nodes.push((format!("{role} :{}", node.port()), node.pid()));
    }
    nodes.sort();

    let config = EngineConfig::default();
    println!(
        "{lines} lines a job, noop sink; engine: concurrency {}, batch size {}; \
         cluster: 3 masters + 3 replicas on this machine",
        config.concurrency, config.batch_size
    );
    let engine = |backend: RedisBackend| {
        Engine::builder()
            .config(config.clone())
            .backend(backend)
            .sink(NoopSink)
            .build()
    };
    let single_backend = RedisBackend::builder(single.url())
        .prefix(prefix)
        .connect()
        .await?;
    let waiting = RedisBackend::builder(cluster.url())
        .prefix(prefix)
        .connect()
        .await?;
    let not_waiting = RedisBackend::builder(cluster.url())
        .prefix(prefix)
        .wait_for_replicas(0, Duration::ZERO)
        .connect()
        .await?;
    let setups = [
        ("single", engine(single_backend)?, vec![single.pid()]),
        (
            "cluster",
            engine(waiting.clone())?,
            nodes.iter().map(|(_, pid)| *pid).collect(),
        ),
        (
            "cluster no WAIT",
            engine(not_waiting)?,
            nodes.iter().map(|(_, pid)| *pid).collect(),
        ),
    ];
    for (name, engine, _) in &setups {
        timed_job(
            engine,
            &csv_input(lines / 10, &format!("warm-{}", name.replace(' ', "-"))),
        )
        .await?;
    }
    let mut secs = vec![Vec::new(); setups.len()];
    let mut cpu = vec![vec![0.0; nodes.len()]; setups.len()];
    for round in 0..ROUNDS {
        for (i, (name, engine, pids)) in setups.iter().enumerate() {
            let before: Vec<f64> = pids.iter().map(|p| cpu_of(*p)).collect();
            let input = csv_input(
                lines,
                &format!(
                    "{}-{round}-{}",
                    name.replace(' ', "-"),
                    wds_core::backend::now_ms()
                ),
            );
            let (_, s) = timed_job(engine, &input).await?;
            for (j, pid) in pids.iter().enumerate() {
                cpu[i][j] += cpu_of(*pid) - before[j];
            }
            secs[i].push(s);
        }
    }
    let measured = (lines as usize * ROUNDS) as f64;
    let mut medians = Vec::new();
    for (i, (name, _, _)) in setups.iter().enumerate() {
        let (median, best) = median_and_best(&mut secs[i]);
        medians.push(median);
        println!(
            "{name:<17} {:>8.0} messages/s (median of {ROUNDS}; best {:.0}/s){}",
            lines as f64 / median,
            lines as f64 / best,
            if i == 0 {
                String::new()
            } else {
                format!("  = {:.0}% of single", 100.0 * medians[0] / median)
            }
        );
    }
    println!("redis-server CPU per message (µs):");
    println!("  single            {:.2}", cpu[0][0] * 1e6 / measured);
    for (i, (name, _, _)) in setups.iter().enumerate().skip(1) {
        let per: Vec<String> = nodes
            .iter()
            .zip(&cpu[i])
            .map(|((node, _), c)| format!("{node} {:.2}", c * 1e6 / measured))
            .collect();
        let total: f64 = cpu[i].iter().sum();
        println!(
            "  {name:<17} {:.2} in all: {}",
            total * 1e6 / measured,
            per.join(", ")
        );
    }
    println!(
        "marks not acknowledged by a replica in time: {}",
        waiting.unreplicated_marks()
    );
    let master_cpu = nodes
        .iter()
        .zip(&cpu[1])
        .find(|((node, _), _)| node.starts_with("master"))
        .map_or(0.0, |(_, c)| *c);
    let per_message = master_cpu / measured;
    if per_message > 0.0 {
        println!(
            "projection: one master core saturates at about {:.0} messages/s; \
             spread over N shards (per-job hash tags, not built yet) about N times that",
            1.0 / per_message
        );
    }
    Ok(())
}
