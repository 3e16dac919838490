//! Scenario 4 of the fault tests: a hostile receiver. Random 500s, 429s
//! with `Retry-After`, answers slower than the workers' timeout, and
//! connections closed without an answer; some users fail every time.
//! Retries keep to the schedule and to `Retry-After`, a message is re-sent
//! only after a failure (G1), exhausted messages are dead letters (G2), and
//! `POST /retry` replays them: they then succeed once the receiver is healthy.
//!
//! `WDS_FAULT_SCALE=n` multiplies the file (2,000 lines).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use wds_core::{backend::LineOutcome, DeadKind, JobId};
use wds_harness::cluster::{count, outcomes, scale, Cluster};
use wds_harness::receiver::{Hit, Reply, TestReceiver};
use wds_harness::users_csv;

const MAX_ATTEMPTS: u32 = 3;
/// The `Retry-After` (seconds) of the few long 429s.
const LONG_RETRY_AFTER: u64 = 8;

/// A stable pseudo-random number in `0..100` for an id's n-th call.
fn roll(id: &str, nth: u32) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (id, nth).hash(&mut h);
    h.finish() % 100
}

/// Users whose number is a multiple of 50 fail every time.
fn always_fails(user: &str) -> bool {
    user.strip_prefix("user-")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 50 == 0)
}

fn hostile(id: &str, user: &str, nth: u32, lines: u64) -> Reply {
    if always_fails(user) {
        return Reply::Status(503);
    }
    // The last 20 users are first answered 429 asking for 8 s. A retry of
    // the engine's own comes well within that once the queue is nearly
    // empty (mid-file, a retry waits behind the rest of the file, so even
    // an ignored Retry-After is retried seconds later, and the 1 s ones
    // cannot tell), so only a Retry-After that is obeyed spaces these
    // retries that far.
    let number = user
        .strip_prefix("user-")
        .and_then(|n| n.parse::<u64>().ok());
    if nth == 1 && number.is_some_and(|n| n + 20 > lines) {
        return Reply::TooMany {
            secs: LONG_RETRY_AFTER,
        };
    }
    match roll(id, nth) {
        0..=9 => Reply::Status(500),
        10..=14 => Reply::TooMany { secs: 1 },
        15..=17 => Reply::Stall(Duration::from_millis(2500)),
        18..=20 => Reply::Reset,
        _ => Reply::Ok,
    }
}

#[test]
fn hostile_receiver_retries_on_schedule_dead_letters_and_replays() {
    let lines = 2_000 * scale();
    let receiver = TestReceiver::with_script(move |r| hostile(r.id, r.user, r.nth, lines));
    let url = receiver.url();
    let attempts = MAX_ATTEMPTS.to_string();
    let mut cluster = Cluster::new(&[
        ("WDS_WEBHOOK_URL", &url),
        // Well below the stall, well above a prompt answer on a loaded machine.
        ("WDS_TIMEOUT_MS", "1500"),
        ("WDS_MAX_ATTEMPTS", &attempts),
    ]);
    cluster.start("initiator", &[]);
    for _ in 0..2 {
        cluster.start("worker", &[]);
    }
    cluster.drop_file("users.csv", &users_csv(lines as usize));
    let job = cluster.wait_done(1, Duration::from_secs(300)).remove(0);
    let hits = receiver.hits();

    // G2: every line delivered or dead, none in doubt (no worker died).
    let (delivered, dead) = (count(&job, "delivered"), count(&job, "dead"));
    assert_eq!(delivered + dead, lines, "{job}");
    assert_eq!(count(&job, "in_doubt"), 0, "{job}");

    // Per id: at most MAX_ATTEMPTS calls, a repeat only after a failure
    // (G1), and each retry no sooner than the schedule allows.
    let mut by_id: HashMap<&str, Vec<&Hit>> = HashMap::new();
    for hit in &hits {
        by_id.entry(hit.id.as_str()).or_default().push(hit);
    }
    let (mut retries, mut after_429, mut min_gap_429) = (0u64, 0u64, Duration::MAX);
    let (mut after_long_429, mut min_gap_long_429) = (0u64, Duration::MAX);
    let mut min_gap_failure = Duration::MAX;
    for (id, calls) in &by_id {
        assert!(
            calls.len() as u32 <= MAX_ATTEMPTS,
            "{id} called {} times",
            calls.len()
        );
        for pair in calls.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            assert_ne!(prev.reply, Reply::Ok, "{id} re-sent after a 200");
            let gap = next.at.duration_since(prev.at);
            retries += 1;
            match &prev.reply {
                Reply::TooMany { secs } => {
                    after_429 += 1;
                    if *secs == LONG_RETRY_AFTER {
                        after_long_429 += 1;
                        min_gap_long_429 = min_gap_long_429.min(gap);
                    }
                    min_gap_429 = min_gap_429.min(gap);
                    // Retry-After is a floor (a little slack for clocks).
                    assert!(
                        gap + Duration::from_millis(50) >= Duration::from_secs(*secs),
                        "{id} retried {gap:?} after a 429 asking for {secs}s"
                    );
                }
                _ => {
                    min_gap_failure = min_gap_failure.min(gap);
                    // Backoff: base 500 ms, half of it fixed ("equal jitter").
                    assert!(
                        gap >= Duration::from_millis(240),
                        "{id} retried {gap:?} after {:?}",
                        prev.reply
                    );
                }
            }
        }
    }
    // The checks above ran on real retries: an engine that never retried,
    // or ignored 429s, fails here.
    assert!(retries > 0, "no id was ever retried");
    assert!(after_429 > 0, "no retry after a 429 was observed");
    assert!(
        after_long_429 > 0,
        "no retry after a {LONG_RETRY_AFTER} s 429 was observed"
    );

    // Dead, exactly: an id is delivered iff one of its calls was answered
    // 200 at once. A stall answers 200 too, but only after the sender's 1.5 s
    // timeout: to the sender it failed. Each dead id was tried exactly
    // MAX_ATTEMPTS times, and the users that always fail are all dead.
    let answered_ok: HashSet<&str> = hits
        .iter()
        .filter(|h| h.reply == Reply::Ok)
        .map(|h| h.id.as_str())
        .collect();
    let never_ok: HashSet<&str> = by_id
        .keys()
        .copied()
        .filter(|id| !answered_ok.contains(id))
        .collect();
    assert_eq!(by_id.len() as u64, lines, "every line was called");
    assert_eq!(
        never_ok.len() as u64,
        dead,
        "dead vs ids never answered 200: {job}"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = cluster.backend(&rt);
    let job_id = JobId::new(job["job"].as_str().expect("job id").to_string());
    let mut doomed = 0u64;
    for (line, outcome) in outcomes(&rt, &backend, &job_id, 1..=lines) {
        let id = format!("{job_id}:{line}");
        let calls = by_id.get(id.as_str()).map_or(0, Vec::len) as u32;
        let is_dead = matches!(outcome, Some(LineOutcome::Dead { .. }));
        match outcome {
            Some(LineOutcome::Delivered { .. }) => {
                assert!(
                    answered_ok.contains(id.as_str()),
                    "{id} delivered, never answered 200"
                )
            }
            Some(LineOutcome::Dead { reason }) => {
                assert_eq!(reason.kind, DeadKind::Exhausted, "{id}: {reason:?}");
                assert!(
                    never_ok.contains(id.as_str()),
                    "{id} dead, yet answered 200"
                );
                assert_eq!(calls, MAX_ATTEMPTS, "{id} dead after {calls} calls");
            }
            other => panic!("{id}: {other:?}"),
        }
        if always_fails(&format!("user-{line}")) {
            doomed += 1;
            assert!(is_dead, "user-{line} always fails, yet is not dead");
        }
    }
    assert_eq!(doomed, lines / 50);
    let count_of = |f: fn(&Reply) -> bool| hits.iter().filter(|h| f(&h.reply)).count();
    eprintln!(
        "FIGURES hostile receiver: {} requests for {lines} lines: 5xx {}, 429 {}, stalls {}, \
         resets {}; {retries} retries (min gap {min_gap_failure:?} after a failure, \
         {min_gap_429:?} after a 429, {after_429} of them, {after_long_429} after a \
         {LONG_RETRY_AFTER} s one, min gap {min_gap_long_429:?}); delivered {delivered}, \
         dead {dead} ({doomed} always failing)",
        hits.len(),
        count_of(|r| matches!(r, Reply::Status(_))),
        count_of(|r| matches!(r, Reply::TooMany { .. })),
        count_of(|r| matches!(r, Reply::Stall(_))),
        count_of(|r| matches!(r, Reply::Reset)),
    );

    // The dead letters are replayable: healthy again, POST /retry, and
    // every one of them is delivered with exactly one more call.
    receiver.set_script(|_| Reply::Ok);
    let before = receiver.count();
    let (status, body) = cluster.post("/retry", "").expect("POST /retry");
    assert_eq!(status, 200, "{body}");
    let replayed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(replayed["replayed"].as_u64(), Some(dead), "{body}");
    let job = cluster.eventually(
        "the replayed job to finish",
        Duration::from_secs(120),
        || {
            let job = cluster.jobs()?.remove(0);
            (job["state"] == "done" && count(&job, "delivered") == lines).then_some(job)
        },
    );
    assert_eq!(count(&job, "dead"), 0, "{job}");
    let replay_hits = &receiver.hits()[before..];
    assert_eq!(replay_hits.len() as u64, dead, "one call per dead letter");
    assert!(replay_hits.iter().all(|h| h.reply == Reply::Ok));
    eprintln!("FIGURES replay: {dead} dead letters replayed, all delivered on the first call");
}
