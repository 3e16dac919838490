//! Scenario 8 of the fault tests (G3): four workers share one rate limit
//! through Redis, against a receiver that allows R requests/s with the same
//! burst and answers 429 above it. Measured at the receiver: never more than
//! R + burst requests in any one-second window, fewer than 0.5% answered
//! 429, and an achieved rate of at least 90% of R; and each of the four
//! workers delivered part of the file (its own `/metrics` count).
//!
//! `WDS_FAULT_SCALE=n` multiplies the run's length (about 10 s).

use std::time::{Duration, Instant};

use wds_harness::checks::delivered_by;
use wds_harness::cluster::{count, scale, Cluster};
use wds_harness::ports::ANY_PORT;
use wds_harness::receiver::{max_in_window, Reply, TestReceiver};
use wds_harness::users_csv;

const RATE: u32 = 200;
const BURST: u32 = 20;

#[test]
fn four_workers_hold_a_shared_rate_limit() {
    let lines = u64::from(RATE) * 10 * scale();
    let receiver = TestReceiver::start();
    receiver.limit(RATE, BURST);
    let url = receiver.url();
    let (rate, burst) = (RATE.to_string(), BURST.to_string());
    // Nothing is killed here, so the product's lease time (30 s) rather
    // than the fault tests' 8 s: once in six runs of the whole suite, with
    // 8 s, a live worker lost two batches' leases while they waited for
    // permits (200 in doubt, job 14 s instead of 10 s), which this test is
    // not about (the cause is being looked for; see the session notes).
    let mut cluster = Cluster::new(&[
        ("WDS_WEBHOOK_URL", &url),
        ("WDS_RATE", &rate),
        ("WDS_BURST", &burst),
        ("WDS_LEASE_TTL_MS", "30000"),
    ]);
    cluster.start("initiator", &[]);
    // Every worker serves its own /metrics; waiting for its address also
    // lets it connect before the file arrives, so all four share it.
    let metrics: Vec<String> = (0..4)
        .map(|_| {
            let index = cluster.start("worker", &[("WDS_METRICS_LISTEN", ANY_PORT)]);
            cluster.services[index].address("worker running", "metrics")
        })
        .collect();
    cluster.drop_file("users.csv", &users_csv(lines as usize));
    let job = cluster.wait_done(1, Duration::from_secs(300)).remove(0);
    assert_eq!(count(&job, "delivered"), lines, "{job}");
    // All four sent: each delivered some of the file, by its own count.
    let delivered: Vec<u64> = metrics
        .iter()
        .map(|addr| delivered_by(addr).unwrap_or_else(|| panic!("no /metrics at {addr}")))
        .collect();
    assert!(
        delivered.iter().all(|n| *n > 0),
        "a worker delivered nothing: {delivered:?}"
    );
    assert_eq!(delivered.iter().sum::<u64>(), lines, "{delivered:?}");

    let hits = receiver.hits();
    let times: Vec<Instant> = hits.iter().map(|h| h.at).collect();
    let max_window = max_in_window(&times, Duration::from_secs(1));
    let limited = hits
        .iter()
        .filter(|h| matches!(h.reply, Reply::TooMany { .. }))
        .count();
    let share = limited as f64 / hits.len() as f64;
    let mut ok: Vec<Instant> = hits
        .iter()
        .filter(|h| h.reply == Reply::Ok)
        .map(|h| h.at)
        .collect();
    // Requests handled on several threads are recorded a little out of
    // order: the span runs from the earliest to the latest, not from the
    // first recorded to the last.
    ok.sort_unstable();
    assert!(ok.len() >= 2, "{} requests answered 200", ok.len());
    let span = ok[ok.len() - 1].duration_since(ok[0]).as_secs_f64();
    // n requests span n - 1 intervals.
    let achieved = (ok.len() - 1) as f64 / span;
    eprintln!(
        "FIGURES rate: R {RATE}/s burst {BURST}, 4 workers (delivered {delivered:?}): {} \
         requests, max {max_window} in any 1 s window (limit {}), 429s {limited} ({:.2}%), \
         achieved {achieved:.1}/s ({:.1}% of R) over {span:.1}s",
        hits.len(),
        RATE + BURST,
        share * 100.0,
        achieved / f64::from(RATE) * 100.0
    );
    assert!(
        max_window as u32 <= RATE + BURST,
        "{max_window} requests in one second"
    );
    assert!(share < 0.005, "{limited} of {} answered 429", hits.len());
    assert!(
        achieved >= 0.9 * f64::from(RATE),
        "achieved {achieved:.1}/s"
    );
}
