//! The three services on a real Redis Cluster (three masters, a replica
//! each: `wds_redis::RedisCluster`), given as `redis+cluster://`. Six
//! files become six jobs whose keys spread over the masters (checked on
//! the masters themselves); while they are delivering, the master holding
//! the first job is killed (`kill -9`); its replica takes over, every
//! process follows it, and every job finishes with each user alerted at
//! most once and every line accounted for.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use wds_harness::checks::{assert_sent_once, worker_in_doubt_window, Recorder};
use wds_harness::cluster::{count, scale, Cluster};
use wds_harness::redis::RedisCluster;

/// A CSV of `n` users whose ids start with `tag`, so each file is a job.
fn users(tag: &str, n: u64) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{tag}-user-{i},hello {i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Each job's id and the prefix of its keys, as the deployment spreads
/// them (asked of a backend connected as the services are).
fn job_tags(url: &str, jobs: &[serde_json::Value]) -> Vec<(String, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let backend = runtime
        .block_on(wds_redis::RedisBackend::builder(url).connect())
        .expect("connect to the cluster");
    assert_eq!(backend.shards(), wds_redis::CLUSTER_SHARDS);
    jobs.iter()
        .map(|job| {
            let id = job["job"].as_str().expect("a job id").to_owned();
            let tag = backend
                .job_key_prefix(&wds_core::JobId::new(&id))
                .to_owned();
            (id, tag)
        })
        .collect()
}

#[test]
fn the_services_follow_a_failover_of_the_master_of_their_keys() {
    let per_file = 5_000 * scale();
    let files = 6u64;
    let total = per_file * files;
    let mut redis = RedisCluster::start(3, 1);
    let url = redis.url();
    // The harness's own Redis is not used: every process gets the cluster.
    let mut cluster = Cluster::new(&[("WDS_REDIS_URL", &url)]);
    cluster.redis.kill();
    let notifier = cluster.start("notifier", &[]);
    let recorder = Recorder::notifier(&cluster.notifier_addr);
    let hook = recorder.url("w");
    let initiator = cluster.start("initiator", &[]);
    let workers: Vec<usize> = (0..2)
        .map(|_| cluster.start("worker", &[("WDS_WEBHOOK_URL", &hook)]))
        .collect();
    for f in 0..files {
        cluster.drop_file(
            &format!("users-{f}.csv"),
            &users(&format!("f{f}"), per_file),
        );
    }
    let started = Instant::now();

    let claimed = cluster.eventually("every file claimed", Duration::from_secs(120), || {
        let jobs = cluster.jobs()?;
        (jobs.len() as u64 == files).then_some(jobs)
    });
    // Each job's hash lives on the master of its shard's tag, and the jobs
    // are on at least two masters.
    let tags = job_tags(&url, &claimed);
    let mut masters = HashSet::new();
    for (job, tag) in &tags {
        let port = redis.master_of(tag).expect("a master serves every slot");
        let mut conn = wds_redis::redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|c| c.get_connection())
            .expect("connect to a master");
        let held: bool = wds_redis::redis::cmd("EXISTS")
            .arg(format!("{tag}:job:{job}"))
            .query(&mut conn)
            .expect("EXISTS");
        assert!(
            held,
            "job {job}'s hash is not on :{port}, the master of {tag}"
        );
        masters.insert(port);
    }
    assert!(
        masters.len() >= 2,
        "the {files} jobs' keys are all on one master: {tags:?}"
    );

    cluster.eventually("delivery progress", Duration::from_secs(300), || {
        (recorder.count() >= total * 3 / 10).then_some(())
    });
    let before = recorder.count();
    let first = &tags[0].1;
    let old = redis.kill_master_of(first);
    let killed = Instant::now();
    let new = redis.wait_for_master_of(first, old);
    let failover = killed.elapsed();

    let jobs = cluster.eventually("every job done", Duration::from_secs(300), || {
        let jobs = cluster.jobs()?;
        (jobs.len() as u64 == files && jobs.iter().all(|j| j["state"] == "done")).then_some(jobs)
    });
    let secs = started.elapsed().as_secs_f64();
    cluster.assert_running(workers.iter().copied().chain([initiator, notifier]));

    // G1: nothing sent twice. G2: every line delivered or dead in doubt
    // (a batch marked when its master died), within the workers' windows.
    let per_id = recorder.per_id();
    assert_sent_once(&per_id, "received");
    let (mut delivered, mut in_doubt) = (0, 0);
    let names: HashSet<String> = jobs.iter().map(|j| j["meta"]["name"].to_string()).collect();
    assert_eq!(names.len() as u64, files, "one job a file: {jobs:?}");
    for job in &jobs {
        assert_eq!(count(job, "lines"), per_file, "{job}");
        assert_eq!(
            count(job, "delivered") + count(job, "in_doubt"),
            per_file,
            "every line delivered or in doubt: {job}"
        );
        delivered += count(job, "delivered");
        in_doubt += count(job, "in_doubt");
    }
    let received = per_id.len() as u64;
    assert!(
        delivered <= received && received <= delivered + in_doubt,
        "received {received}, delivered {delivered}, in doubt {in_doubt}"
    );
    let window = worker_in_doubt_window(&wds_core::EngineConfig::default());
    let bound = workers.len() as u64 * window;
    assert!(in_doubt <= bound, "in doubt {in_doubt} > {bound}");
    eprintln!(
        "FIGURES cluster failover: {files} jobs on {} masters; master :{old} killed at {before} of {total} requests, \
         replica :{new} serving {:.1}s later; all done in {secs:.1}s; delivered {delivered}, \
         in doubt {in_doubt} (bound {bound}), ids received twice 0",
        masters.len(),
        failover.as_secs_f64()
    );
}
