//! The README's distributed recipe as real processes: a redis-server of its
//! own, one notifier, one initiator and three workers, a file dropped into
//! the inbox, and every user delivered exactly once.
//!
//! "Exactly once" is checked where a repeat would show: the workers call
//! the notifier through a recording pass-through (each worker on its own
//! URL), so an id sent twice is seen even though the notifier would drop it
//! from its output. "Every worker took part" is checked from what each
//! worker delivered: its own `/metrics` count, which must match what the
//! recorder saw it send.
//!
//! `WDS_E2E_ROWS` sets the file's size (default 30,000; the README's figure
//! is 100,000).

use std::time::{Duration, Instant};

use wds_harness::checks::{assert_sent_once, delivered_by, per_tag, users_in, Recorder};
use wds_harness::cluster::{count, Cluster};
use wds_harness::ports::ANY_PORT;

fn rows() -> u64 {
    std::env::var("WDS_E2E_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000)
}

#[test]
fn initiator_three_workers_and_notifier_deliver_every_user_once() {
    let rows = rows();
    let mut cluster = Cluster::new(&[]);
    let notifier = cluster.start("notifier", &[]);
    let recorder = Recorder::notifier(&cluster.notifier_addr);
    let initiator = cluster.start("initiator", &[]);
    let mut workers = Vec::new();
    for i in 1..=3 {
        let (tag, url) = (format!("worker-{i}"), recorder.url(&format!("worker-{i}")));
        let index = cluster.start(
            "worker",
            &[("WDS_WEBHOOK_URL", &url), ("WDS_METRICS_LISTEN", ANY_PORT)],
        );
        let metrics = cluster.services[index].address("worker running", "metrics");
        workers.push((index, tag, metrics));
    }

    // A file with a header row, as a person would write it.
    let mut body = String::from("userId,alertMessage\n");
    for i in 1..=rows {
        body.push_str(&format!("user-{i},\"Hello {i}, your order has shipped\"\n"));
    }
    let started = Instant::now();
    cluster.drop_file("users.csv", body.as_bytes());
    let job = cluster.wait_done(1, Duration::from_secs(600)).remove(0);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(count(&job, "lines"), rows, "{job}");
    assert_eq!(count(&job, "delivered"), rows, "{job}");
    assert_eq!(count(&job, "dead"), 0, "{job}");

    // What each worker says it delivered, before it stops.
    let delivered: Vec<u64> = workers
        .iter()
        .map(|(_, tag, metrics)| {
            delivered_by(metrics).unwrap_or_else(|| panic!("{tag}: no /metrics at {metrics}"))
        })
        .collect();

    // Stop every role gracefully; each must exit 0.
    let mut order: Vec<usize> = workers.iter().map(|(index, _, _)| *index).collect();
    order.extend([initiator, notifier]);
    for index in &order {
        cluster.services[*index].signal("TERM");
    }
    for index in order {
        let s = &mut cluster.services[index];
        let status = s
            .wait(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{} did not stop", s.name));
        assert!(
            status.success(),
            "{} exited {status}:\n{}",
            s.name,
            s.log_text()
        );
    }
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());

    // Every id sent once, accepted once; no repeat for the notifier to drop.
    let sent = recorder.sent();
    assert_eq!(sent.len() as u64, rows, "requests sent");
    assert_sent_once(&recorder.per_id(), "sent");
    assert!(
        sent.iter().all(|s| s.status == Some(200) && !s.duplicate),
        "a request was not accepted"
    );
    // The notifier's CSV (flushed on shutdown): one line per user.
    let users = users_in(&cluster.path().join("wds-data/outbox/alerts.csv"));
    assert_eq!(users.len() as u64, rows, "distinct users in the output");
    assert!(users.values().all(|n| *n == 1), "a user written twice");

    // Every worker took part: what it delivered by its own count, and what
    // the recorder saw it send, agree and are not zero.
    let by_tag = per_tag(&sent);
    for ((_, tag, _), delivered) in workers.iter().zip(&delivered) {
        assert!(*delivered > 0, "{tag} delivered nothing: {by_tag:?}");
        assert_eq!(
            by_tag.get(tag).copied().unwrap_or(0),
            *delivered,
            "{tag}: sent per the recorder vs delivered per its /metrics"
        );
    }
    assert_eq!(delivered.iter().sum::<u64>(), rows);
    eprintln!(
        "FIGURES {rows} users through 3 workers in {secs:.1}s ({:.0}/s); delivered per worker \
         {delivered:?}",
        rows as f64 / secs
    );
}

/// The key shard count belongs to the deployment: the first process stores
/// the one it was given, the next ones without a count use it, and a
/// process naming another count stops at start saying why, rather than
/// looking for the jobs on the wrong shards.
#[test]
fn a_service_naming_another_shard_count_is_refused_at_start() {
    let mut cluster = Cluster::new(&[]);
    let first = cluster.start("worker", &[("WDS_REDIS_SHARDS", "4")]);
    let logs = |cluster: &Cluster| cluster.logs();
    cluster.eventually(
        "the first worker connected",
        Duration::from_secs(60),
        || logs(&cluster).contains("shards=4").then_some(()),
    );
    let initiator = cluster.start("initiator", &[]);
    let refused = cluster.start("worker", &[("WDS_REDIS_SHARDS", "2")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.running(refused) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !cluster.running(refused),
        "a worker naming 2 shards of a 4-shard deployment must stop:\n{}",
        cluster.logs()
    );
    let text = cluster.logs();
    assert!(
        text.contains("spreads its jobs over 4 key shards, not 2"),
        "the refusal must say why:\n{text}"
    );
    // The initiator, given no count, uses the deployment's.
    let initiator_log = text
        .split("--- ")
        .find(|part| part.starts_with("initiator"))
        .unwrap_or_default();
    assert!(initiator_log.contains("shards=4"), "{initiator_log}");
    cluster.assert_running([first, initiator]);
}
