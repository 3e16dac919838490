//! Fault tests of pauses, with real processes over a private Redis:
//!
//! - a live worker frozen (`SIGSTOP`) past its lease while it has batches on
//!   the wire, then thawed (`SIGCONT`): another worker takes its batches
//!   over, and when it wakes up nothing is sent twice (G1), every line is
//!   accounted for once (G2) and its late results change no count;
//! - one 429 with `Retry-After: 2` pausing every worker *process* (G3):
//!   after the requests already on their way, nothing reaches the endpoint
//!   until the pause is over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wds_core::{backend::LineOutcome, DeadKind, JobId, JobState};
use wds_harness::checks::{assert_sent_once, delivered_by, per_tag, Recorder};
use wds_harness::cluster::{count, outcomes, Cluster};
use wds_harness::ports::ANY_PORT;
use wds_harness::receiver::{Hit, Reply, TestReceiver};
use wds_harness::users_csv;

/// Messages one worker may leave in doubt with the default settings.
fn window() -> u64 {
    wds_harness::checks::worker_in_doubt_window(&wds_core::EngineConfig::default())
}

/// Each worker calls its own URL (`/webhook/<tag>`) through a recording
/// pass-through, so every request is known by its sender.
#[test]
fn a_worker_frozen_past_its_lease_then_thawed_sends_nothing_twice() {
    const LEASE_MS: u64 = 3_000;
    let lines = 20_000u64;
    // Answers after 5 ms: the frozen worker always has a window on the wire.
    let receiver = TestReceiver::with_script(|_| Reply::Stall(Duration::from_millis(5)));
    let recorder = Recorder::new(Some(receiver.url()));
    let lease = LEASE_MS.to_string();
    let mut cluster = Cluster::new(&[("WDS_LEASE_TTL_MS", &lease)]);
    cluster.start("initiator", &[]);
    let frozen = cluster.start("worker", &[("WDS_WEBHOOK_URL", &recorder.url("frozen"))]);
    cluster.start("worker", &[("WDS_WEBHOOK_URL", &recorder.url("live"))]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = cluster.backend(&rt);
    cluster.drop_file("users.csv", &users_csv(lines as usize));

    // Freeze it mid-file, while it is sending.
    cluster.eventually("both workers sending", Duration::from_secs(120), || {
        let by_tag = per_tag(&recorder.sent());
        (recorder.count() >= lines / 5 && by_tag.get("frozen").is_some_and(|n| *n > 0))
            .then_some(())
    });
    cluster.services[frozen].signal("STOP");
    let stopped = Instant::now();
    let sent_before = per_tag(&recorder.sent())
        .get("frozen")
        .copied()
        .unwrap_or(0);
    // Frozen until its lease ran out and the other worker found a batch of
    // it marked as sending (now dead in doubt): the take-over happened. (Or
    // until the job ended without one: the checks below say what went wrong.)
    let taken_over = cluster.eventually(
        "the frozen worker's batches to be taken over",
        Duration::from_secs(60),
        || {
            let report = cluster.reports(&rt, &backend).into_iter().next()?;
            (report.in_doubt > 0 || report.state == JobState::Done).then(|| stopped.elapsed())
        },
    );
    // Its last renewal came at most a third of the lease before the freeze.
    assert!(
        taken_over >= Duration::from_millis(LEASE_MS * 2 / 3),
        "taken over after {taken_over:?}, before its {LEASE_MS} ms lease ran out"
    );
    // And frozen longer than a whole lease, whatever came first.
    cluster.eventually("a whole lease to pass", Duration::from_secs(60), || {
        (stopped.elapsed() >= Duration::from_millis(LEASE_MS)).then_some(())
    });
    let frozen_for = stopped.elapsed();
    assert!(
        cluster.running(frozen),
        "the frozen worker exited:\n{}",
        cluster.logs()
    );
    cluster.services[frozen].signal("CONT");
    let thawed = Instant::now();

    // Done, or over-counted (late results counted on top of the take-over's
    // can never add up to `done`): fail at once rather than at the deadline.
    let job = cluster.eventually("the job to be done", Duration::from_secs(300), || {
        let job = cluster.jobs()?.into_iter().next()?;
        let accounted = ["delivered", "dead", "invalid", "duplicate"]
            .iter()
            .map(|f| job[*f].as_u64().unwrap_or(0))
            .sum::<u64>();
        (job["state"] == "done" || accounted > lines).then_some(job)
    });
    assert_eq!(job["state"], "done", "over-counted: {job}");
    assert_eq!(count(&job, "lines"), lines, "{job}");
    assert!(
        cluster.running(frozen),
        "the thawed worker exited:\n{}",
        cluster.logs()
    );
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());

    // G1: no id reached the receiver twice, thawed worker included.
    let sent = recorder.answered(Duration::from_secs(30));
    assert_sent_once(&recorder.per_id(), "sent");
    let sender: HashMap<&str, &str> = sent
        .iter()
        .map(|s| (s.id.as_str(), s.tag.as_str()))
        .collect();
    let late = sent
        .iter()
        .filter(|s| s.tag == "frozen" && s.at >= thawed)
        .count();

    // G2 line by line, and the counts agree with the lines: the thawed
    // worker's settles of batches it no longer held changed nothing.
    let id = JobId::new(job["job"].as_str().expect("job id").to_string());
    let (mut delivered, mut dead_in_doubt) = (0u64, 0u64);
    for (line, outcome) in outcomes(&rt, &backend, &id, 1..=lines) {
        let key = format!("{id}:{line}");
        match outcome {
            Some(LineOutcome::Delivered { .. }) => {
                assert!(
                    sender.contains_key(key.as_str()),
                    "{key} delivered, never sent"
                );
                delivered += 1;
            }
            Some(LineOutcome::Dead { reason }) => {
                assert_eq!(reason.kind, DeadKind::InDoubt, "{key}: {reason:?}");
                // Only the frozen worker's batches can be in doubt.
                if let Some(tag) = sender.get(key.as_str()) {
                    assert_eq!(*tag, "frozen", "{key} in doubt, sent by {tag}");
                }
                dead_in_doubt += 1;
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(delivered, count(&job, "delivered"), "{job}");
    assert_eq!(dead_in_doubt, count(&job, "dead"), "{job}");
    assert_eq!(dead_in_doubt, count(&job, "in_doubt"), "{job}");
    assert_eq!(delivered + dead_in_doubt, lines, "{job}");
    assert!(dead_in_doubt > 0, "nothing was in doubt: {job}");
    assert!(
        dead_in_doubt <= window(),
        "in doubt {dead_in_doubt} > one worker's window {}",
        window()
    );
    let lost_leases = cluster.services[frozen]
        .log_text()
        .matches("lost a lease")
        .count();
    eprintln!(
        "FIGURES frozen worker: frozen {:.1}s (lease {LEASE_MS} ms) after sending \
         {sent_before}, taken over after {:.1}s; after thawing it sent {late} more and logged {lost_leases} lost \
         leases; in doubt {dead_in_doubt} (bound {}), delivered {delivered}, ids sent twice 0",
        frozen_for.as_secs_f64(),
        taken_over.as_secs_f64(),
        window()
    );
}

/// How long after the 429 arrived requests already on their way may still
/// arrive: the loopback round trips, the Redis limiter's look-ahead (each
/// worker may use the permits it reserved, `rate / 20`, within 50 ms), and
/// scheduling on a loaded machine.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(300);
/// The `Retry-After` of the one 429.
const RETRY_AFTER: u64 = 2;
const WORKERS: usize = 3;

/// When a sample was taken, and each worker's delivered count then.
type Samples = Vec<(Instant, Vec<u64>)>;

/// Each worker's delivered count (its own `/metrics`), sampled every 50 ms
/// on a thread of its own until dropped.
struct Sampler {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(addrs: Vec<String>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let counts: Option<Vec<u64>> = addrs.iter().map(|a| delivered_by(a)).collect();
                    if let Some(counts) = counts {
                        samples.lock().unwrap().push((at, counts));
                    }
                    // A sampling period, not a wait for an event.
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sampler {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Worker `w`'s count at the last sample taken at or before `at`.
    fn at(&self, w: usize, at: Instant) -> u64 {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .map_or(0, |(_, c)| c[w])
    }

    /// Worker `w`'s count at the last sample.
    fn last(&self, w: usize) -> u64 {
        self.samples.lock().unwrap().last().map_or(0, |(_, c)| c[w])
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Delivers `lines` over three workers (with `env` added), answers the
/// `nth` request 429 with `Retry-After: 2`, and checks that from
/// `IN_FLIGHT_GRACE` after that 429 until the pause ends every worker sent
/// at most half of what it sent in as long a window before (all together at
/// most a quarter): a worker that did not pause sends as much as before.
///
/// All workers call the same URL: with a rate, the limiter they share (and
/// its back-off) is keyed by the webhook URL. Who sent what comes from each
/// worker's own `/metrics`, sampled.
fn one_429_pauses_every_worker(env: &[(&str, &str)], lines: u64, nth: u64) {
    let receiver = TestReceiver::with_script(move |r| {
        if r.total == nth {
            Reply::TooMany { secs: RETRY_AFTER }
        } else {
            Reply::Ok
        }
    });
    let url = receiver.url();
    let mut cluster = Cluster::new(env);
    cluster.start("initiator", &[]);
    // Every worker running (its address logged) before the file arrives,
    // so all share it.
    let metrics: Vec<String> = (0..WORKERS)
        .map(|_| {
            let index = cluster.start(
                "worker",
                &[("WDS_WEBHOOK_URL", &url), ("WDS_METRICS_LISTEN", ANY_PORT)],
            );
            cluster.services[index].address("worker running", "metrics")
        })
        .collect();
    let sampler = Sampler::start(metrics);
    cluster.drop_file("users.csv", &users_csv(lines as usize));
    let job = cluster.wait_done(1, Duration::from_secs(300)).remove(0);
    assert_eq!(count(&job, "delivered"), lines, "{job}");
    assert_eq!(count(&job, "dead"), 0, "{job}");
    // One more sample, after the last delivery.
    let end = Instant::now();
    cluster.eventually("a sample after the job", Duration::from_secs(30), || {
        (sampler.samples.lock().unwrap().last()?.0 > end).then_some(())
    });
    let mut hits = receiver.hits();
    hits.sort_by_key(|h| h.at);

    let limited: Vec<_> = hits
        .iter()
        .filter(|h| matches!(h.reply, Reply::TooMany { .. }))
        .collect();
    assert_eq!(limited.len(), 1, "exactly one 429");
    let (t0, limited_id) = (limited[0].at, limited[0].id.clone());
    let pause = Duration::from_secs(RETRY_AFTER);
    let since = |h: &Hit| h.at.checked_duration_since(t0);
    // Nothing, from any worker, from the grace on until the pause is over
    // (100 ms short of it: the pause counts from when a worker read the 429).
    //
    // "Nothing" cannot be asked of a loaded machine: a worker may read the
    // pause from Redis late, or its calls past the limiter may arrive late,
    // and a few requests straggle into the window (147 once, the first
    // 314 ms after the 429, with builds running). What no straggling can
    // hide is a worker that did not pause: it goes on at its own speed. So
    // the quiet window is compared with as long a window just before the
    // 429, when every worker was at full speed: all workers together sent
    // at most a quarter of that, and each worker, by its own count, at
    // most half of its own (a worker that never paused sends as much as
    // before; half also allows one that noticed the pause several hundred
    // milliseconds late).
    let quiet_end = pause - Duration::from_millis(100);
    let quiet = quiet_end - IN_FLIGHT_GRACE;
    let during: Vec<Duration> = hits
        .iter()
        .filter_map(since)
        .filter(|d| *d >= IN_FLIGHT_GRACE && *d < quiet_end)
        .collect();
    let sent_before = hits
        .iter()
        .filter(|h| h.at < t0 && t0.duration_since(h.at) <= quiet)
        .count();
    assert!(
        sent_before >= 100,
        "only {sent_before} requests in the {quiet:?} before the 429: the test cannot see a \
         missing pause"
    );
    assert!(
        during.len() * 4 <= sent_before,
        "{} requests during the back-off ({sent_before} in as long a window before the 429), \
         the first {:?} after the 429",
        during.len(),
        during.first()
    );
    let per_worker: Vec<(u64, u64)> = (0..WORKERS)
        .map(|w| {
            let before = sampler.at(w, t0) - sampler.at(w, t0 - quiet);
            let paused = sampler.at(w, t0 + quiet_end) - sampler.at(w, t0 + IN_FLIGHT_GRACE);
            (before, paused)
        })
        .collect();
    for (w, (before, paused)) in per_worker.iter().enumerate() {
        assert!(
            paused * 2 <= *before,
            "worker {w} delivered {paused} during the back-off, {before} in as long a window \
             before the 429: it did not pause (all: {per_worker:?})"
        );
    }
    // Before the grace ran out, only requests already on their way: each
    // worker's calls past its limiter plus its reserved permits at most.
    let in_flight = hits
        .iter()
        .filter_map(since)
        .filter(|d| !d.is_zero() && *d < IN_FLIGHT_GRACE)
        .count() as u64;
    let reserve = env
        .iter()
        .find(|(k, _)| *k == "WDS_RATE")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .map_or(0, |rate| (rate / 20).max(1));
    let concurrency = wds_core::EngineConfig::default().concurrency as u64;
    let bound = if reserve > 0 {
        WORKERS as u64 * (concurrency + reserve)
    } else {
        // Without a rate the other workers learn of the pause by asking
        // Redis every 100 ms (`RedisBackOff`): until then they go on at
        // full speed. At most two such intervals' worth of their traffic,
        // measured just before the 429, on top of what was on the wire.
        let poll = Duration::from_millis(200);
        let before = hits
            .iter()
            .filter(|h| h.at < t0 && t0.duration_since(h.at) <= poll)
            .count() as u64;
        WORKERS as u64 * concurrency + before
    };
    assert!(
        in_flight <= bound,
        "{in_flight} requests within {IN_FLIGHT_GRACE:?} of the 429 (bound {bound})"
    );
    // Every worker was delivering in the second before the 429, and again
    // after the pause: the pause held them all, not idle ones.
    for w in 0..WORKERS {
        let before = sampler.at(w, t0) - sampler.at(w, t0 - Duration::from_secs(1));
        assert!(
            before > 0,
            "worker {w} delivered nothing in the second before the 429"
        );
        let after = sampler.last(w) - sampler.at(w, t0 + pause);
        assert!(after > 0, "worker {w} delivered nothing after the pause");
    }
    // The limited message itself was retried after the pause, and delivered.
    let retried: Vec<_> = hits.iter().filter(|h| h.id == limited_id).collect();
    assert_eq!(retried.len(), 2, "{limited_id}: {retried:?}");
    let gap = retried[1].at.duration_since(retried[0].at);
    assert!(gap >= quiet_end, "{limited_id} retried after {gap:?}");
    assert_eq!(retried[1].reply, Reply::Ok);
    eprintln!(
        "FIGURES one 429 ({env:?}): {} requests by {WORKERS} workers ({:?} each); {in_flight} \
         arrived within {IN_FLIGHT_GRACE:?} of the 429 (bound {bound}), {} in the following \
         {quiet:?} ({sent_before} in as long a window before it; per worker delivered \
         before/during {per_worker:?}); the limited message retried after {gap:?}",
        hits.len(),
        (0..WORKERS).map(|w| sampler.last(w)).collect::<Vec<_>>(),
        during.len(),
    );
}

#[test]
fn one_429_pauses_every_worker_process_with_a_shared_rate() {
    // 300/s: the 429 comes 2 s in, and 6 s of work remain after the pause.
    one_429_pauses_every_worker(&[("WDS_RATE", "300")], 2_400, 600);
}

#[test]
fn one_429_pauses_every_worker_process_without_a_rate() {
    one_429_pauses_every_worker(&[], 20_000, 2_000);
}
