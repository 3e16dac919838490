//! Scenario 1 of the fault tests: `kill -9` of a random worker, again and
//! again, while a file is being delivered, a replacement started each time.
//!
//! - AtMostOnce (G1, G2, G4): no `webhook-id` reaches the receiver twice;
//!   every line is delivered, dead as in doubt, invalid or duplicate; the
//!   in-doubt count is at most the killed workers' in-flight windows.
//! - AtLeastOnce (G5): every line reaches the receiver, and after dropping
//!   repeated ids every user is there exactly once.
//!
//! `WDS_FAULT_SCALE=n` multiplies the file (20,000 lines) and the kills (4).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wds_core::{DeadKind, JobId, LineOutcome};
use wds_tests::cluster::{count, outcomes, scale, Cluster, Rng};
use wds_tests::receiver::TestReceiver;
use wds_tests::users_csv;

const WORKERS: usize = 3;
const CONCURRENCY: usize = 64;
const BATCH: usize = 100;

/// Messages one worker may leave in doubt: its sending window
/// (`EngineConfig::sending_batches() * batch_size`).
fn window() -> u64 {
    let mut c = wds_core::EngineConfig::default();
    c.concurrency = CONCURRENCY;
    c.batch_size = BATCH;
    (c.sending_batches() * c.batch_size) as u64
}

struct Run {
    cluster: Cluster,
    receiver: TestReceiver,
    lines: u64,
    kills: u64,
    job: serde_json::Value,
}

/// Delivers a file while killing a random worker at evenly spaced points of
/// its progress; returns once the job is done.
fn deliver_under_kills(mode: &str) -> Run {
    let lines = 20_000 * scale();
    let kills = 4 * scale();
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let (concurrency, batch) = (CONCURRENCY.to_string(), BATCH.to_string());
    let mut cluster = Cluster::new(&[
        ("WDS_WEBHOOK_URL", &url),
        ("WDS_MODE", mode),
        ("WDS_CONCURRENCY", &concurrency),
        ("WDS_BATCH_SIZE", &batch),
    ]);
    cluster.start("initiator", &[]);
    let mut workers: Vec<usize> = (0..WORKERS).map(|_| cluster.start("worker", &[])).collect();
    cluster.drop_file("users.csv", &users_csv(lines as usize));

    let mut rng = Rng::new();
    let started = Instant::now();
    for k in 1..=kills {
        // Kill at k/(kills+1) of the way, so every kill lands mid-file.
        let at = lines * k / (kills + 1);
        cluster.eventually("delivery progress", Duration::from_secs(300), || {
            (receiver.count() as u64 >= at).then_some(())
        });
        let victim = rng.below(workers.len() as u64) as usize;
        let index = workers.remove(victim);
        cluster.services[index].signal("KILL");
        cluster.services[index].wait(Duration::from_secs(10));
        workers.push(cluster.start("worker", &[]));
        eprintln!(
            "kill {k}/{kills}: {} at {} requests received ({:.1}s)",
            cluster.services[index].name,
            receiver.count(),
            started.elapsed().as_secs_f64()
        );
    }
    let job = cluster.wait_done(1, Duration::from_secs(300)).remove(0);
    eprintln!(
        "{mode}: {lines} lines done in {:.1}s: {job}",
        started.elapsed().as_secs_f64()
    );
    Run {
        cluster,
        receiver,
        lines,
        kills,
        job,
    }
}

#[test]
fn at_most_once_worker_kills_never_send_twice_and_account_every_line() {
    let run = deliver_under_kills("at-most-once");
    let job = &run.job;
    assert_eq!(count(job, "lines"), run.lines, "{job}");
    let (delivered, dead, in_doubt) = (
        count(job, "delivered"),
        count(job, "dead"),
        count(job, "in_doubt"),
    );
    assert_eq!(
        delivered + dead + count(job, "invalid") + count(job, "duplicate"),
        run.lines,
        "G2 sum: {job}"
    );

    // G1, from what the receiver got: no id twice.
    let per_id = run.receiver.per_id();
    let repeated: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} ids reached the receiver more than once, e.g. {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(5)]
    );

    // G2 line by line: delivered lines were received; the rest are in doubt.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = run.cluster.backend(&rt);
    let id = JobId(job["job"].as_str().unwrap().to_string());
    let mut by_kind: HashMap<&str, u64> = HashMap::new();
    for (line, outcome) in outcomes(&rt, &backend, &id, 1..=run.lines) {
        let received = per_id.contains_key(&format!("{id}:{line}"));
        let kind = match outcome {
            Some(LineOutcome::Delivered { .. }) => {
                assert!(received, "line {line} delivered but never received");
                "delivered"
            }
            Some(LineOutcome::Dead { reason }) => {
                assert_eq!(reason.kind, DeadKind::InDoubt, "line {line}: {reason:?}");
                "in_doubt"
            }
            other => panic!("line {line}: unexpected outcome {other:?}"),
        };
        *by_kind.entry(kind).or_default() += 1;
    }
    assert_eq!(by_kind.get("delivered").copied().unwrap_or(0), delivered);
    assert_eq!(by_kind.get("in_doubt").copied().unwrap_or(0), in_doubt);
    assert_eq!(dead, in_doubt, "only in-doubt dead letters expected: {job}");
    let bound = run.kills * window();
    assert!(
        in_doubt <= bound,
        "in doubt {in_doubt} > {} kills x window {}",
        run.kills,
        window()
    );
    let never_sent = run.lines - per_id.len() as u64;
    eprintln!(
        "FIGURES at-most-once: kills {}, in doubt {in_doubt} (bound {bound}), of which never \
         reached the receiver {never_sent}; ids received twice 0; delivered {delivered}/{}",
        run.kills, run.lines
    );
}

#[test]
fn at_least_once_worker_kills_reach_the_receiver_exactly_once_after_dedupe() {
    let run = deliver_under_kills("at-least-once");
    let job = &run.job;
    assert_eq!(count(job, "lines"), run.lines, "{job}");
    assert_eq!(
        count(job, "delivered"),
        run.lines,
        "every line delivered: {job}"
    );
    assert_eq!(count(job, "dead"), 0, "{job}");
    assert_eq!(count(job, "in_doubt"), 0, "{job}");

    // After dropping repeated webhook-ids, every user exactly once.
    let hits = run.receiver.hits();
    let mut seen = std::collections::HashSet::new();
    let mut users: HashMap<String, u32> = HashMap::new();
    for hit in &hits {
        if seen.insert(hit.id.clone()) {
            *users.entry(hit.user.clone()).or_default() += 1;
        }
    }
    assert_eq!(users.len() as u64, run.lines, "distinct users after dedupe");
    assert!(users.values().all(|n| *n == 1), "a user under two ids");
    for i in [1, run.lines / 2, run.lines] {
        assert!(users.contains_key(&format!("user-{i}")), "user-{i} missing");
    }
    // Only in-doubt messages are re-sent: at most the killed windows.
    let repeats = hits.len() as u64 - seen.len() as u64;
    let bound = run.kills * window();
    assert!(repeats <= bound, "{repeats} repeats > bound {bound}");
    eprintln!(
        "FIGURES at-least-once: kills {}, repeated webhook-ids {repeats} (bound {bound}), \
         distinct users {} of {}",
        run.kills,
        users.len(),
        run.lines
    );
}
