//! Scenario 1 of the fault tests: `kill -9` of a random worker, again and
//! again, while a file is being delivered, a replacement started each time.
//! Each worker calls its own URL (`/webhook/<tag>`), so the recorder in
//! front of the endpoint knows who sent what; each kill is checked to have
//! killed a running process by SIGKILL, and to have left messages in flight.
//!
//! - AtMostOnce (G1, G2, G4): no `webhook-id` reaches the receiver twice;
//!   every line is delivered or dead as in doubt; every killed worker had
//!   sent messages that end in doubt; the in-doubt count is at most the
//!   killed workers' in-flight windows.
//! - AtLeastOnce (G5), through the real notifier (`full_system notifier`)
//!   behind a recording pass-through: every user exactly once in the
//!   notifier's output, and the repeats the workers sent equal the repeats
//!   the notifier answered as duplicates (and dropped).
//!
//! `WDS_FAULT_SCALE=n` multiplies the file (20,000 lines) and the kills (4).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use wds_core::{backend::LineOutcome, DeadKind, JobId};
use wds_harness::checks::{assert_sent_once, per_tag, repeats, users_in, Recorder};
use wds_harness::cluster::{count, outcomes, scale, Cluster, Rng};
use wds_harness::receiver::{Reply, TestReceiver};
use wds_harness::users_csv;

const WORKERS: usize = 3;
const CONCURRENCY: usize = 64;
const BATCH: usize = 100;
/// How long the scripted receiver takes to answer: long enough that every
/// worker always has a full window on the wire, so a kill never lands
/// between two requests; short enough to keep the test quick.
const ANSWER_AFTER: Duration = Duration::from_millis(5);

/// Messages one worker may leave in doubt: the sending windows of its
/// delivery threads (`EngineConfig::sending_batches() * batch_size` each).
fn window() -> u64 {
    let mut c = wds_core::EngineConfig::default();
    c.concurrency = CONCURRENCY;
    c.batch_size = BATCH;
    wds_harness::checks::worker_in_doubt_window(&c)
}

struct Run {
    cluster: Cluster,
    lines: u64,
    /// The tags of the killed workers, in kill order.
    killed: Vec<String>,
    job: serde_json::Value,
}

/// Delivers a file through `recorder` while killing a random worker at
/// evenly spaced points of its progress; returns once the job is done.
fn deliver_under_kills(mut cluster: Cluster, recorder: &Recorder) -> Run {
    let lines = 20_000 * scale();
    let kills = 4 * scale();
    cluster.start("initiator", &[]);
    let mut tags = 0;
    let mut start_worker = |cluster: &mut Cluster| {
        tags += 1;
        let tag = format!("w{tags}");
        let url = recorder.url(&tag);
        (cluster.start("worker", &[("WDS_WEBHOOK_URL", &url)]), tag)
    };
    let mut workers: Vec<(usize, String)> =
        (0..WORKERS).map(|_| start_worker(&mut cluster)).collect();
    cluster.drop_file("users.csv", &users_csv(lines as usize));

    let mut rng = Rng::new();
    let started = Instant::now();
    let mut killed = Vec::new();
    for k in 1..=kills {
        // Kill at k/(kills+1) of the way, so every kill lands mid-file.
        let at = lines * k / (kills + 1);
        cluster.eventually("delivery progress", Duration::from_secs(300), || {
            (recorder.count() >= at).then_some(())
        });
        let (index, tag) = workers.remove(rng.below(workers.len() as u64) as usize);
        // Panics unless a running process died of SIGKILL.
        cluster.services[index].kill_9();
        eprintln!(
            "kill {k}/{kills}: {} ({tag}) at {} requests received ({:.1}s)",
            cluster.services[index].name,
            recorder.count(),
            started.elapsed().as_secs_f64()
        );
        killed.push(tag);
        workers.push(start_worker(&mut cluster));
    }
    let job = cluster.wait_done(1, Duration::from_secs(300)).remove(0);
    eprintln!(
        "{lines} lines done in {:.1}s: {job}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(count(&job, "lines"), lines, "{job}");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
    Run {
        cluster,
        lines,
        killed,
        job,
    }
}

#[test]
fn at_most_once_worker_kills_never_send_twice_and_account_every_line() {
    let receiver = TestReceiver::with_script(|_| Reply::Stall(ANSWER_AFTER));
    let recorder = Recorder::new(Some(receiver.url()));
    let (concurrency, batch) = (CONCURRENCY.to_string(), BATCH.to_string());
    let cluster = Cluster::new(&[
        ("WDS_MODE", "at-most-once"),
        ("WDS_CONCURRENCY", &concurrency),
        ("WDS_BATCH_SIZE", &batch),
    ]);
    let run = deliver_under_kills(cluster, &recorder);
    let job = &run.job;
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
    let per_id = recorder.per_id();
    assert_sent_once(&per_id, "reached the receiver");

    // G2 line by line: delivered lines were received; the rest are in doubt.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = run.cluster.backend(&rt);
    let id = JobId::new(job["job"].as_str().expect("job id").to_string());
    let sender: HashMap<String, String> =
        recorder.sent().into_iter().map(|s| (s.id, s.tag)).collect();
    let mut by_kind: HashMap<&str, u64> = HashMap::new();
    // Per killed worker: its messages that ended in doubt.
    let mut in_doubt_sent_by: HashMap<&str, u64> = HashMap::new();
    for (line, outcome) in outcomes(&rt, &backend, &id, 1..=run.lines) {
        let key = format!("{id}:{line}");
        let kind = match outcome {
            Some(LineOutcome::Delivered { .. }) => {
                assert!(
                    per_id.contains_key(&key),
                    "line {line} delivered but never received"
                );
                "delivered"
            }
            Some(LineOutcome::Dead { reason }) => {
                assert_eq!(reason.kind, DeadKind::InDoubt, "line {line}: {reason:?}");
                if let Some(tag) = sender.get(&key) {
                    *in_doubt_sent_by.entry(tag.as_str()).or_default() += 1;
                }
                "in_doubt"
            }
            other => panic!("line {line}: unexpected outcome {other:?}"),
        };
        *by_kind.entry(kind).or_default() += 1;
    }
    assert_eq!(by_kind.get("delivered").copied().unwrap_or(0), delivered);
    assert_eq!(by_kind.get("in_doubt").copied().unwrap_or(0), in_doubt);
    assert_eq!(dead, in_doubt, "only in-doubt dead letters expected: {job}");
    // Each kill hit a worker with messages on the wire: some of what it
    // sent ended in doubt. (Only killed workers leave messages in doubt.)
    for tag in &run.killed {
        assert!(
            in_doubt_sent_by.get(tag.as_str()).copied().unwrap_or(0) > 0,
            "killed worker {tag} had nothing in flight: in doubt by sender {in_doubt_sent_by:?}"
        );
    }
    for tag in in_doubt_sent_by.keys() {
        assert!(
            run.killed.iter().any(|k| k == tag),
            "{tag} was never killed, yet left messages in doubt: {in_doubt_sent_by:?}"
        );
    }
    let kills = run.killed.len() as u64;
    let bound = kills * window();
    assert!(
        in_doubt <= bound,
        "in doubt {in_doubt} > {kills} kills x window {}",
        window()
    );
    let never_sent = run.lines - per_id.len() as u64;
    eprintln!(
        "FIGURES at-most-once: kills {kills}, in doubt {in_doubt} (bound {bound}; sent by the \
         killed workers {in_doubt_sent_by:?}), of which never reached the receiver \
         {never_sent}; ids received twice 0; delivered {delivered}/{}",
        run.lines
    );
}

#[test]
fn at_least_once_worker_kills_the_notifier_records_every_user_once() {
    let (concurrency, batch) = (CONCURRENCY.to_string(), BATCH.to_string());
    let mut cluster = Cluster::new(&[
        ("WDS_MODE", "at-least-once"),
        ("WDS_CONCURRENCY", &concurrency),
        ("WDS_BATCH_SIZE", &batch),
    ]);
    let notifier = cluster.start("notifier", &[]);
    // Every request passes through the recorder to the real notifier: the
    // recorder counts what the workers sent, the notifier decides alone
    // what is a repeat (it answers {"status":"duplicate"} and drops it).
    let recorder = Recorder::notifier(&cluster.notifier_addr);
    let mut run = deliver_under_kills(cluster, &recorder);
    let job = &run.job;
    assert_eq!(
        count(job, "delivered"),
        run.lines,
        "every line delivered: {job}"
    );
    assert_eq!(count(job, "dead"), 0, "{job}");
    assert_eq!(count(job, "in_doubt"), 0, "{job}");

    // The notifier's output, flushed by a graceful stop.
    run.cluster.services[notifier].signal("TERM");
    let status = run.cluster.services[notifier].wait(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "notifier stop: {status:?}"
    );
    let users = users_in(&run.cluster.path().join("wds-data/outbox/alerts.csv"));
    let twice: Vec<_> = users.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} users written more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(
        users.len() as u64,
        run.lines,
        "users in the notifier's output"
    );
    for i in 1..=run.lines {
        assert!(users.contains_key(&format!("user-{i}")), "user-{i} missing");
    }

    // The repeats the workers sent, counted at the recorder, equal the
    // repeats the notifier dropped: every request reached it, and for every
    // id it accepted exactly one and answered the others as duplicates.
    let sent = recorder.answered(Duration::from_secs(30));
    assert!(
        sent.iter().all(|s| s.status == Some(200)),
        "the notifier did not answer 200 to every request"
    );
    let per_id = recorder.per_id();
    let sent_repeats = repeats(&per_id);
    let dropped = sent.iter().filter(|s| s.duplicate).count() as u64;
    assert_eq!(
        dropped, sent_repeats,
        "the notifier dropped {dropped} repeats, the workers sent {sent_repeats}"
    );
    let mut accepted: HashMap<&str, u32> = HashMap::new();
    for s in sent.iter().filter(|s| !s.duplicate) {
        *accepted.entry(s.id.as_str()).or_default() += 1;
    }
    assert_eq!(accepted.len() as u64, run.lines);
    assert!(accepted.values().all(|n| *n == 1), "an id accepted twice");

    // The kills did leave messages to re-send: each killed worker had sent
    // messages that another worker sent again.
    let mut first_sender: HashMap<&str, &str> = HashMap::new();
    let mut resent_from: HashSet<&str> = HashSet::new();
    let mut by_time = sent.clone();
    by_time.sort_by_key(|s| s.at);
    for s in &by_time {
        match first_sender.get(s.id.as_str()) {
            None => {
                first_sender.insert(&s.id, &s.tag);
            }
            Some(first) => {
                resent_from.insert(first);
            }
        }
    }
    for tag in &run.killed {
        assert!(
            resent_from.contains(tag.as_str()),
            "nothing {tag} sent before its kill was sent again: {resent_from:?}"
        );
    }
    let bound = run.killed.len() as u64 * window();
    assert!(
        sent_repeats <= bound,
        "{sent_repeats} repeats > bound {bound}"
    );
    eprintln!(
        "FIGURES at-least-once through the notifier: kills {}, requests {} ({:?} by worker), \
         repeats sent {sent_repeats} (bound {bound}) = duplicates dropped by the notifier \
         {dropped}; users in its output {} of {}, each once",
        run.killed.len(),
        sent.len(),
        per_tag(&sent),
        users.len(),
        run.lines
    );
}
