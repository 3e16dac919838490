//! Several workers, each with its own `RedisBackend` (its own connections),
//! leasing from one queue: a batch has one holder at a time, every message
//! is settled exactly once, and a worker that dies has its batches
//! reclaimed after the ttl.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wds_core::{
    backend::{now_ms, BatchId, Checkpoint, Lease, OffsetStore, Push, Queue, Settle},
    DeadKind, DeadReason, Format, JobId, JobMeta, JobState, Message, MessageId,
};
use wds_redis::{RedisBackend, RedisServer};

const PREFIX: &str = "consumers";

async fn backend(server: &RedisServer, prefix: &str) -> RedisBackend {
    sharded(server, prefix, 1).await
}

async fn sharded(server: &RedisServer, prefix: &str, shards: usize) -> RedisBackend {
    match RedisBackend::builder(server.url())
        .prefix(prefix)
        .shards(shards)
        .connect()
        .await
    {
        Ok(backend) => backend,
        Err(e) => panic!("cannot connect to the test redis-server: {e}"),
    }
}

/// Claims a job and pushes `batches` batches of `size` messages; returns it.
async fn fill(backend: &RedisBackend, name: &str, batches: u64, size: u64) -> JobId {
    let meta = JobMeta::new(format!("{name}.csv"), Format::Csv, now_ms());
    let job = backend
        .claim(&format!("test/{name}/{}", now_ms()), meta)
        .await
        .expect("claim")
        .job;
    for seq in 0..batches {
        let first = seq * size + 1;
        let messages = (first..first + size)
            .map(|line| Message::fresh(&job, line, format!("user-{line}"), "hello"))
            .collect();
        let push = Push {
            job: job.clone(),
            messages,
            rejects: Vec::new(),
            next: Checkpoint {
                seq: seq + 1,
                byte: (first + size) * 10,
                line: first + size,
                records: (seq + 1) * size,
                done: seq + 1 == batches,
            },
        };
        assert!(backend.push(&push).await.expect("push").applied);
    }
    job
}

/// What the workers saw, shared between them.
#[derive(Default)]
struct Seen {
    /// Batches currently held by some worker.
    held: Mutex<HashSet<BatchId>>,
    /// How often each message was settled.
    settled: Mutex<HashMap<MessageId, u32>>,
}

/// A worker: leases a few batches at a time, holds them briefly, settles
/// them, until the job is done.
async fn work(backend: RedisBackend, jobs: Vec<JobId>, seen: Arc<Seen>) {
    loop {
        let leases = backend
            .lease(3, Duration::from_secs(30))
            .await
            .expect("lease");
        if leases.is_empty() {
            let mut done = true;
            for job in &jobs {
                let report = backend.report(job).await.expect("report").expect("job");
                done &= report.state == JobState::Done;
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        for lease in &leases {
            let fresh = seen.held.lock().unwrap().insert(lease.batch.id.clone());
            assert!(
                fresh,
                "batch {} leased while another worker held it",
                lease.batch.id
            );
        }
        for lease in leases {
            backend.mark_sending(&lease).await.expect("mark_sending");
            // Let the other workers run while we hold the lease.
            tokio::task::yield_now().await;
            {
                let mut settled = seen.settled.lock().unwrap();
                for m in &lease.batch.messages {
                    *settled.entry(m.id.clone()).or_default() += 1;
                }
            }
            seen.held.lock().unwrap().remove(&lease.batch.id);
            backend
                .settle(&lease, &wds_core::testkit::all_delivered(&lease))
                .await
                .expect("settle");
        }
    }
}

async fn workers_share_one_queue(workers: usize) {
    workers_share_the_queue(workers, 1, 1).await;
}

/// `workers` workers, each with its own backend, deliver `jobs` jobs
/// spread over `shards` key shards.
async fn workers_share_the_queue(workers: usize, jobs: usize, shards: usize) {
    let server = RedisServer::start();
    let prefix = format!("{PREFIX}-{workers}-{shards}");
    let setup = sharded(&server, &prefix, shards).await;
    let (batches, size) = (200 / jobs as u64, 10);
    let mut ids = Vec::new();
    for j in 0..jobs {
        ids.push(fill(&setup, &format!("shared-{workers}-{j}"), batches, size).await);
    }
    if shards > 1 {
        let used: HashSet<&str> = ids.iter().map(|j| setup.job_key_prefix(j)).collect();
        assert!(used.len() > 1, "the jobs all hash to one shard: {used:?}");
    }

    let seen = Arc::new(Seen::default());
    let mut tasks = Vec::new();
    for _ in 0..workers {
        // Each worker its own backend: its own pool and connections.
        let backend = sharded(&server, &prefix, shards).await;
        tasks.push(tokio::spawn(work(backend, ids.clone(), seen.clone())));
    }
    // Every worker stops once the jobs are done; a worker still looping
    // after the deadline (a lost message, a batch never settled) fails the
    // test instead of hanging it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for task in tasks {
        tokio::time::timeout_at(deadline, task)
            .await
            .unwrap_or_else(|_| panic!("the jobs were not done within 120 s"))
            .expect("a worker failed");
    }

    {
        let settled = seen.settled.lock().unwrap();
        assert_eq!(
            settled.len() as u64,
            batches * size * jobs as u64,
            "every message settled"
        );
        assert!(
            settled.values().all(|n| *n == 1),
            "a message was settled more than once"
        );
    }
    for job in &ids {
        let report = setup.report(job).await.expect("report").expect("job");
        assert_eq!(
            (report.state, report.delivered, report.lines),
            (JobState::Done, batches * size, batches * size)
        );
    }
    let stats = setup.stats().await.expect("stats");
    assert_eq!(
        (stats.ready, stats.leased),
        (0, 0),
        "nothing left: {stats:?}"
    );
}

/// Jobs on several key shards, workers leasing from them in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_jobs_on_several_shards() {
    workers_share_the_queue(4, 5, 4).await;
}

/// A worker whose leases just found every shard empty still gets, at its
/// very next lease, work another process pushed meanwhile: shards it
/// passes by for having had none are asked when the others have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_pushed_elsewhere_is_leased_at_once_on_a_sharded_queue() {
    let server = RedisServer::start();
    let prefix = format!("{PREFIX}-idle");
    let worker = sharded(&server, &prefix, 8).await;
    let initiator = sharded(&server, &prefix, 8).await;
    for round in 0..8 {
        assert!(worker
            .lease(4, Duration::from_secs(30))
            .await
            .expect("lease")
            .is_empty());
        let job = fill(&initiator, &format!("idle-{round}"), 1, 3).await;
        let leases = worker
            .lease(4, Duration::from_secs(30))
            .await
            .expect("lease");
        assert_eq!(
            leases.len(),
            1,
            "round {round}: the batch pushed by another process right after an empty lease \
             must be leased at once"
        );
        assert_eq!(leases[0].batch.messages[0].id.job, job);
        worker
            .settle(&leases[0], &wds_core::testkit::all_delivered(&leases[0]))
            .await
            .expect("settle");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_queue() {
    workers_share_one_queue(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_one_queue() {
    workers_share_one_queue(4).await;
}

/// A worker that dies holding leases (dropped without settling): another
/// worker gets its batches once the ttl is over, not before, with
/// `previously_sending` set exactly for those it had marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_workers_leases_are_reclaimed_after_the_ttl() {
    let server = RedisServer::start();
    let prefix = format!("{PREFIX}-killed");
    let setup = backend(&server, &prefix).await;
    let job = fill(&setup, "killed", 4, 5).await;

    let ttl = Duration::from_millis(400);
    let (deadline, marked) = {
        let doomed = backend(&server, &prefix).await;
        let leases = doomed.lease(10, ttl).await.expect("lease");
        assert_eq!(leases.len(), 4);
        let mut marked = HashSet::new();
        for lease in leases.iter().take(2) {
            doomed.mark_sending(lease).await.expect("mark_sending");
            marked.insert(lease.batch.id.clone());
        }
        (leases[0].deadline_ms, marked)
        // The worker "dies": its backend and leases are dropped unsettled.
    };

    let survivor = backend(&server, &prefix).await;
    let mut reclaimed: Vec<Lease> = Vec::new();
    let give_up = now_ms() + 10_000;
    while reclaimed.len() < 4 && now_ms() < give_up {
        let leases = survivor
            .lease(10, Duration::from_secs(30))
            .await
            .expect("lease");
        if !leases.is_empty() {
            assert!(
                now_ms() + 50 >= deadline,
                "a batch was reclaimed {} ms before its lease expired",
                deadline.saturating_sub(now_ms())
            );
        }
        reclaimed.extend(leases);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        reclaimed.len(),
        4,
        "every batch of the dead worker is reclaimed"
    );
    for lease in &reclaimed {
        assert_eq!(
            lease.previously_sending,
            marked.contains(&lease.batch.id),
            "previously_sending of batch {} must say whether the dead worker marked it",
            lease.batch.id
        );
        let outcomes = if lease.previously_sending {
            lease
                .batch
                .messages
                .iter()
                .map(|m| Settle::Dead {
                    message: m.clone(),
                    reason: DeadReason {
                        kind: DeadKind::InDoubt,
                        detail: "its worker died while sending".into(),
                    },
                })
                .collect()
        } else {
            wds_core::testkit::all_delivered(lease)
        };
        survivor.settle(lease, &outcomes).await.expect("settle");
    }
    let report = setup.report(&job).await.expect("report").expect("job");
    assert_eq!(
        (report.state, report.delivered, report.dead, report.in_doubt),
        (JobState::Done, 10, 10, 10)
    );
}
