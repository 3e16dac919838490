//! WDS on a real Redis Cluster: six `redis-server --cluster-enabled`
//! processes (three masters, one replica each), made by `redis-cli
//! --cluster create`.
//!
//! - The whole `testkit` conformance suite through a `redis+cluster://` URL,
//!   each check under its own prefix (so its own slot, spread over the
//!   masters).
//! - A one-server URL pointed at a node of the cluster is refused at
//!   connect with an error saying what to write, instead of every call
//!   failing with `MOVED` and being retried forever.
//! - The master holding a job is killed (`SIGKILL`) mid-delivery: its
//!   replica takes over, the engine follows it, and the job finishes with
//!   every line accounted for and no message sent twice.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{assert_once_each, fresh, Counting, Running};
use wds_core::{
    backend::{OffsetStore, Queue},
    limiter::Limiter,
    testkit, Engine, Error, Format, Input,
};
use wds_redis::{RedisBackend, RedisCluster, RedisLimiter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_conforms_on_a_cluster() {
    let mut cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    // Jobs spread over the default 16 key shards, so over the masters.
    testkit::run_all_sharded(|| async {
        let backend = fresh(&url, "concrete").await;
        assert_eq!(backend.shards(), wds_redis::CLUSTER_SHARDS);
        (backend.clone(), backend)
    })
    .await;
    testkit::run_all_sharded(|| async {
        let backend = fresh(&url, "dyn").await;
        let queue: Arc<dyn Queue> = Arc::new(backend.clone());
        let offsets: Arc<dyn OffsetStore> = Arc::new(backend);
        (queue, offsets)
    })
    .await;
    testkit::run_control(|| fresh(&url, "control")).await;
    // The checks' prefixes landed on more than one master.
    let masters: HashSet<u16> = (0..12)
        .filter_map(|n| cluster.master_of(&format!("{{concrete-{n}}}")))
        .collect();
    assert!(
        masters.len() >= 2,
        "the prefixes of the checks all hash to one master: {masters:?}"
    );
    // A cluster with replicas waits for one after each mark.
    assert_eq!(fresh(&url, "wait").await.replicas_waited_for(), 1);
    // An endpoint's circuit and limiter live in slots of their own, shared
    // by two connections as by two workers.
    let a = fresh(&url, "shared").await;
    let b = RedisBackend::builder(&url)
        .prefix(a.key_prefix().trim_matches(['{', '}']))
        .connect()
        .await
        .expect("connect");
    testkit::circuit_store_conforms(&a, &b).await;
    let limiter = RedisLimiter::new(&a, "https://example.test/hook", 1_000, 10).expect("limiter");
    assert_eq!(
        limiter.key(),
        format!(
            "{{{}:limit:https://example.test/hook}}",
            a.key_prefix().trim_matches(['{', '}'])
        )
    );
    for _ in 0..5 {
        limiter.acquire(2).await.expect("permits from the cluster");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_a_cluster_named_as_one_server_is_refused_clearly() {
    let mut cluster = RedisCluster::start(3, 0);
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    for port in ports {
        let url = format!("redis://127.0.0.1:{port}/0");
        let started = Instant::now();
        match RedisBackend::builder(&url).connect().await {
            Err(Error::Config { reason, .. }) => {
                assert!(
                    reason.contains("redis+cluster://"),
                    "the error says how to name a cluster: {reason}"
                );
            }
            Err(other) => panic!("{url}: not a configuration error: {other}"),
            Ok(_) => panic!("{url}: a node of a cluster was taken as one server"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused at once"
        );
    }
    // No replicas: marks do not wait (WAIT could only time out).
    let backend = fresh(&cluster.url(), "nowait").await;
    assert_eq!(backend.replicas_waited_for(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_wait_for_a_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let backend = RedisBackend::builder(cluster.url())
        .prefix("wait")
        .wait_for_replicas(1, Duration::from_millis(50))
        .connect()
        .await
        .expect("connect");
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(Counting::default())
        .build()
        .expect("engine");
    let job = |name: &str| {
        let csv: String = (0..300).map(|i| format!("{name}-{i},alert\n")).collect();
        Input::from_bytes(name, csv.into_bytes()).with_format(Format::Csv)
    };
    // The master's replica stops answering (SIGSTOP): every mark waits
    // 50 ms for it, is counted, and the batch is sent anyway.
    let replicas = cluster.replicas_of("{wait}");
    let paused: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|n| replicas.contains(&n.port()))
        .filter_map(|n| n.pid().map(|p| p.to_string()))
        .collect();
    assert_eq!(
        paused.len(),
        1,
        "one replica of {{wait}}'s master: {replicas:?}"
    );
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .arg(sig)
            .args(&paused)
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    let started = Instant::now();
    let report = engine.run_once(&job("paused")).await;
    signal("-CONT");
    let report = report.expect("run_once");
    assert_eq!(report.delivered, 300, "{report:?}");
    let unreplicated = backend.unreplicated_marks();
    assert!(
        unreplicated >= 3,
        "each of the 3 batches' marks waited in vain for the paused replica: {unreplicated}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "each mark waited for the replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_the_failover_of_its_master() {
    let mut cluster = RedisCluster::start(3, 1);
    let backend = RedisBackend::builder(cluster.url())
        .prefix("failover")
        // Fail fast while the slot has no master; the engine retries.
        .command_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("connect");
    assert_eq!(backend.replicas_waited_for(), 1);
    let sink = Arc::new(Counting::default());
    let engine = Engine::builder()
        .backend(backend.clone())
        .shared_sink(sink.clone())
        .concurrency(32)
        .build()
        .expect("engine");

    // 12,000 lines: 11,500 users and 500 invalid lines.
    let mut csv = String::new();
    for i in 0..12_000u32 {
        if i % 24 == 0 {
            csv.push_str(",missing user\n");
        } else {
            csv.push_str(&format!("user-{i},alert\n"));
        }
    }
    let input = Input::from_bytes("failover.csv", csv.into_bytes()).with_format(Format::Csv);

    let running = Running::start(&engine, &input);
    running.until_reached(&sink, 2_000).await;
    let old = cluster.kill_master_of("{failover}");
    let killed_at = Instant::now();
    let during = sink.reached();
    let new = cluster.wait_for_master_of("{failover}", old);
    eprintln!(
        "master {old} killed after {during} deliveries; replica {new} serves the job's slot \
         {} ms later",
        killed_at.elapsed().as_millis()
    );

    let report = running.finish().await;
    eprintln!(
        "report: delivered {}, dead {} (in doubt {}), invalid {}; {} users reached; \
         {} marks not acknowledged by a replica in time",
        report.delivered,
        report.dead,
        report.in_doubt,
        report.invalid,
        sink.reached(),
        backend.unreplicated_marks()
    );
    assert_eq!(report.lines, 12_000);
    assert_eq!(report.invalid, 500);
    assert_once_each(&report, &sink, during);
}
