//! Tries to break guarantees G1 (no duplicates) and G2 (no silent loss) in
//! one process: a scripted sink that fails, rate-limits, refuses and hangs,
//! and engines aborted at many points of a file and replaced by new ones on
//! the same memory backend.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wds_core::retry::RetryPolicy;
use wds_core::{
    backend::{Backend, LineOutcome, OffsetStore, Queue},
    DeadKind, DeliveryMode, Engine, EngineConfig, Input, JobReport, JobState, MessageId,
};
use wds_harness::{account, users_csv, Freezable, ScriptedSink, Step};
use wds_memory::MemoryBackend;

/// Settings that make failures and expiries happen within a test's time.
fn fast_config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.batch_size = 20;
    c.concurrency = 16;
    c.lease_ttl = Duration::from_millis(400);
    c.delivery_timeout = Duration::from_millis(200);
    c.idle_poll = Duration::from_millis(20);
    c.retry = RetryPolicy::default();
    c.retry.max_attempts = 4;
    c.retry.max_age = Duration::from_secs(60);
    c.retry.base_delay = Duration::from_millis(20);
    c.retry.max_delay = Duration::from_millis(200);
    c
}

fn engine<B: Backend>(backend: &B, sink: Arc<ScriptedSink>, config: EngineConfig) -> Engine {
    Engine::builder()
        .backend(backend.clone())
        .shared_sink(sink)
        .config(config)
        .build()
        .expect("engine")
}

/// Runs `engine`'s deliverer on a task until the returned token is cancelled.
fn deliver_in_background(
    engine: &Engine,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<wds_core::Result<()>>,
) {
    let cancel = CancellationToken::new();
    let deliverer = engine.deliverer();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { deliverer.run(cancel).await }
    });
    (cancel, run)
}

const PATIENCE: Option<Duration> = Some(Duration::from_secs(60));

/// [`Engine::run_once`] with a deadline: a job that is not done within
/// [`PATIENCE`] fails the test instead of hanging it (`run_once` itself
/// waits without a limit), and an engine error fails it too.
async fn run_once(engine: &Engine, input: &Input) -> JobReport {
    let patience = PATIENCE.expect("a deadline");
    match tokio::time::timeout(patience, engine.run_once(input)).await {
        Ok(report) => report.expect("the engine failed"),
        Err(_) => panic!("the job was not done within {patience:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_ends_in_exactly_one_state() {
    // 200 users, 10 malformed lines, 10 repeats, blank lines and a header.
    let mut body = String::from("userId,alertMessage\n");
    let mut record_lines = Vec::new();
    let mut line = 1;
    let mut add = |text: &str, is_record: bool| {
        body.push_str(text);
        line += 1;
        if is_record {
            record_lines.push(line);
        }
    };
    for i in 1..=200 {
        add(&format!("user-{i},Alert {i}\n"), true);
        if i % 20 == 0 {
            add("bad,line,with three fields\n", true);
            add("\n", false);
            add(&format!("user-{i},Alert {i}\n"), true);
        }
    }
    let input = Input::from_bytes("mixed.csv", body.into_bytes());
    let backend = MemoryBackend::new();
    let sink = ScriptedSink::ok(Duration::ZERO);
    let report = run_once(&engine(&backend, sink.clone(), fast_config()), &input).await;

    assert_eq!(report.state, JobState::Done);
    assert_eq!(report.lines, 220);
    assert_eq!(report.delivered, 200);
    assert_eq!(report.invalid, 10);
    assert_eq!(report.duplicate, 10);
    assert_eq!(report.dead, 0);
    let acc = account(&backend, &report, record_lines).await;
    assert_eq!(acc.delivered + acc.rejected, 220);
    let per_id = sink.calls_per_id();
    assert_eq!(per_id.len(), 200, "each unique user called");
    assert!(per_id.values().all(|&n| n == 1), "a user was called twice");
    let rejects = backend.rejects(&report.job, 100).await.unwrap();
    assert!(rejects.iter().any(|r| matches!(&r.kind,
        wds_core::backend::RejectKind::Invalid { reason } if reason.contains("field"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_until_delivered() {
    let input = Input::from_bytes("retry.csv", users_csv(300));
    let backend = MemoryBackend::new();
    // Every message fails twice, then succeeds.
    let sink = ScriptedSink::new(|_, n| {
        if n <= 2 {
            Step::Fail
        } else {
            Step::Ok(Duration::ZERO)
        }
    });
    let report = run_once(&engine(&backend, sink.clone(), fast_config()), &input).await;
    assert_eq!(report.delivered, 300, "{report:?}");
    account(&backend, &report, 1..=300).await;
    assert!(sink.calls_per_id().values().all(|&n| n == 3));
    let id = MessageId {
        job: report.job.clone(),
        line: 7,
    };
    match backend.outcome(&id).await.unwrap() {
        Some(LineOutcome::Delivered { receipt }) => {
            assert_eq!(receipt.attempt, 3);
            assert_eq!(receipt.status, Some(200));
        }
        other => panic!("line 7: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_messages_are_dead_and_replayable() {
    let input = Input::from_bytes("exhaust.csv", users_csv(100));
    let backend = MemoryBackend::new();
    let healed = Arc::new(AtomicBool::new(false));
    let sink = {
        let healed = healed.clone();
        ScriptedSink::new(move |m, _| {
            if m.id.line % 2 == 0 && !healed.load(Ordering::SeqCst) {
                Step::Fail
            } else {
                Step::Ok(Duration::ZERO)
            }
        })
    };
    let config = fast_config();
    let max_attempts = config.retry.max_attempts;
    let engine = engine(&backend, sink.clone(), config);
    let report = run_once(&engine, &input).await;
    assert_eq!(report.delivered, 50, "{report:?}");
    assert_eq!(report.dead, 50);
    account(&backend, &report, 1..=100).await;
    let dead = backend.dead_letters(Some(&report.job), 1000).await.unwrap();
    assert_eq!(dead.len(), 50);
    assert!(dead.iter().all(|d| d.reason.kind == DeadKind::Exhausted));
    assert!(
        dead[0].reason.detail.contains("503"),
        "{:?}",
        dead[0].reason
    );
    for (id, n) in sink.calls_per_id() {
        let expect = if id.line % 2 == 0 { max_attempts } else { 1 };
        assert_eq!(n, expect, "calls for line {}", id.line);
    }

    // The receiver recovers; replaying the dead letters delivers them.
    healed.store(true, Ordering::SeqCst);
    assert_eq!(backend.replay(Some(&report.job)).await.unwrap(), 50);
    let cancel = CancellationToken::new();
    let deliverer = engine.deliverer();
    let run = tokio::spawn({
        let cancel = cancel.clone();
        async move { deliverer.run(cancel).await }
    });
    let report = engine.wait_for(&report.job, PATIENCE).await.unwrap();
    cancel.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(report.state, JobState::Done);
    assert_eq!((report.delivered, report.dead), (100, 0));
    account(&backend, &report, 1..=100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_delivery_for_its_retry_after() {
    // 400 calls of 5 ms, 4 at a time: about 500 ms of work, most of it
    // after the 429, so a missing pause would put calls in the quiet window.
    let lines = 400;
    let input = Input::from_bytes("limited.csv", users_csv(lines));
    let backend = MemoryBackend::new();
    let retry_after = Duration::from_millis(600);
    let sink = ScriptedSink::new(move |m, n| {
        if m.id.line == 30 && n == 1 {
            Step::RateLimited(retry_after)
        } else {
            Step::Ok(Duration::from_millis(5))
        }
    });
    let mut config = fast_config();
    config.concurrency = 4;
    // Retry-After is honoured up to the policy's max delay.
    config.retry.max_delay = Duration::from_secs(1);
    let report = run_once(&engine(&backend, sink.clone(), config), &input).await;
    assert_eq!(report.delivered, lines as u64, "{report:?}");
    account(&backend, &report, 1..=lines as u64).await;

    let calls = sink.calls();
    let limited_at = calls.iter().find(|c| c.id.line == 30).unwrap().at;
    // Calls already past the limiter when the 429 came may still start
    // a moment later; after that, nothing until Retry-After has passed.
    let quiet_from = limited_at + Duration::from_millis(50);
    let quiet_to = limited_at + retry_after - Duration::from_millis(50);
    let during: Vec<_> = calls
        .iter()
        .filter(|c| c.at > quiet_from && c.at < quiet_to)
        .collect();
    assert!(
        during.is_empty(),
        "{} calls during the back-off",
        during.len()
    );
    // The window could have held calls: most of the work came after it.
    let after = calls.iter().filter(|c| c.at >= quiet_to).count();
    assert!(
        after >= lines / 2,
        "only {after} calls after the back-off: the test cannot see a missing pause"
    );
    let retried = calls.iter().filter(|c| c.id.line == 30).nth(1).unwrap().at;
    assert!(retried >= limited_at + retry_after - Duration::from_millis(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_dead_at_once() {
    let mut body = String::new();
    for i in 1..=60 {
        let user = if i % 3 == 0 {
            format!("gone-{i}")
        } else {
            format!("user-{i}")
        };
        body.push_str(&format!("{user},hello\n"));
    }
    let input = Input::from_bytes("perm.csv", body.into_bytes());
    let backend = MemoryBackend::new();
    let sink = ScriptedSink::new(|m, _| {
        if m.user_id.starts_with("gone") {
            Step::Permanent
        } else {
            Step::Ok(Duration::ZERO)
        }
    });
    let report = run_once(&engine(&backend, sink.clone(), fast_config()), &input).await;
    assert_eq!((report.delivered, report.dead), (40, 20), "{report:?}");
    account(&backend, &report, 1..=60).await;
    assert!(
        sink.calls_per_id().values().all(|&n| n == 1),
        "a permanent failure was retried"
    );
    let dead = backend.dead_letters(Some(&report.job), 100).await.unwrap();
    assert!(dead
        .iter()
        .all(|d| d.reason.kind == DeadKind::Permanent && d.reason.detail.contains("404")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_hangs_times_out_and_is_retried() {
    let input = Input::from_bytes("hang.csv", users_csv(50));
    let backend = MemoryBackend::new();
    let sink = ScriptedSink::new(|m, n| {
        if m.id.line % 10 == 0 && n == 1 {
            Step::Hang
        } else {
            Step::Ok(Duration::ZERO)
        }
    });
    let started = Instant::now();
    let report = run_once(&engine(&backend, sink.clone(), fast_config()), &input).await;
    assert_eq!(report.delivered, 50, "{report:?}");
    account(&backend, &report, 1..=50).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    for (id, n) in sink.calls_per_id() {
        assert_eq!(n, if id.line % 10 == 0 { 2 } else { 1 }, "line {}", id.line);
    }
}

/// Where a crash lands: an event, not a time, so that a loaded machine
/// cannot move it (a crash "after 3 ms" may come before the job exists or
/// after it is done).
#[derive(Clone, Copy, Debug)]
enum CrashAt {
    /// Once the batcher has pushed at least this many lines.
    Pushed(u64),
    /// Once the sink has been called at least this many times.
    Calls(usize),
}

/// Runs batcher and deliverer as one task and aborts it (a crash: no
/// graceful shutdown) at `at`. Panics when the engine stopped or failed on
/// its own before the crash, or when the crash point was never reached.
async fn crash_once(
    backend: &MemoryBackend,
    sink: &Arc<ScriptedSink>,
    config: &EngineConfig,
    input: &Input,
    at: CrashAt,
) {
    // The engine talks to the backend through a view that the crash freezes
    // first, so nothing it does after the crash moment reaches the backend.
    let view = Freezable::new(backend);
    let engine = engine(&view, sink.clone(), config.clone());
    let task = {
        let input = input.clone();
        tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let deliverer = engine.deliverer();
            let batcher = engine.batcher();
            // The batcher may finish reading before the crash; the deliverer
            // runs until cancelled, so this only returns on an engine error.
            let (delivered, read) =
                tokio::join!(deliverer.run(cancel.clone()), batcher.run(&input, &cancel));
            format!(
                "deliverer: {delivered:?}; batcher: {:?}",
                read.map(|r| r.state)
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reached = match at {
            CrashAt::Calls(n) => sink.call_count() >= n,
            CrashAt::Pushed(n) => backend
                .reports()
                .await
                .unwrap()
                .first()
                .is_some_and(|r| r.enqueued >= n),
        };
        if reached {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the crash point {at:?} was never reached: {} calls, {:?}",
            sink.call_count(),
            backend.reports().await.unwrap()
        );
        assert!(
            !task.is_finished(),
            "the engine stopped before the crash point {at:?}"
        );
        match at {
            CrashAt::Calls(_) => {
                let notified = sink.called.notified();
                let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
            }
            CrashAt::Pushed(_) => tokio::time::sleep(Duration::from_micros(200)).await,
        }
    }
    view.freeze();
    if task.is_finished() {
        panic!(
            "the engine stopped on its own before the crash: {:?}",
            task.await
        );
    }
    task.abort();
    let aborted = task.await;
    assert!(
        aborted.as_ref().is_err_and(|e| e.is_cancelled()),
        "the engine ended before the abort: {aborted:?}"
    );
}

async fn crash_and_recover(mode: DeliveryMode) {
    let lines = 600u64;
    let mut config = fast_config();
    config.mode = mode;
    let window = wds_harness::checks::in_doubt_window(&config);
    // Abort points: right after the first push (maybe before any call),
    // once half the file is pushed, and at many sink calls.
    let points = [
        CrashAt::Pushed(1),
        CrashAt::Pushed(lines / 2),
        CrashAt::Calls(1),
        CrashAt::Calls(7),
        CrashAt::Calls(33),
        CrashAt::Calls(150),
        CrashAt::Calls(401),
        CrashAt::Calls(599),
    ];
    for (round, &at) in points.iter().enumerate() {
        let input = Input::from_bytes(format!("crash-{round}.csv"), users_csv(lines as usize));
        let backend = MemoryBackend::new();
        let sink = ScriptedSink::ok(Duration::from_millis(1));
        crash_once(&backend, &sink, &config, &input, at).await;
        let calls_at_crash = sink.call_count();
        // The crash landed mid-job: the job is not done (at the last
        // point every line may have been sent, but not all settled).
        let before = backend.reports().await.unwrap();
        assert!(
            before.iter().all(|r| r.state != JobState::Done),
            "round {round}: the job was done before the crash: {before:?}"
        );
        // And it landed where it says: the job exists, with at least the
        // lines pushed or the calls made that the crash waited for.
        let enqueued_at_crash = match before.as_slice() {
            [job] => job.enqueued,
            other => panic!("round {round} ({at:?}): not one job at the crash: {other:?}"),
        };
        match at {
            CrashAt::Pushed(n) => assert!(
                enqueued_at_crash >= n,
                "round {round}: crashed at {enqueued_at_crash} pushed, before {n}"
            ),
            CrashAt::Calls(n) => assert!(
                calls_at_crash >= n,
                "round {round}: crashed at {calls_at_crash} calls, before {n}"
            ),
        }

        // A new engine on the same backend finishes the job.
        let recovered = engine(&backend, sink.clone(), config.clone());
        let report = run_once(&recovered, &input).await;
        let acc = account(&backend, &report, 1..=lines).await;
        assert_eq!(report.lines, lines, "round {round}: {report:?}");
        assert_eq!(
            report.enqueued, lines,
            "round {round}: a line was enqueued twice or skipped"
        );

        let per_id = sink.calls_per_id();
        match mode {
            DeliveryMode::AtMostOnce => {
                // G1: the sink never saw a message twice.
                let twice: Vec<_> = per_id.iter().filter(|(_, &n)| n > 1).collect();
                assert!(twice.is_empty(), "round {round}: sent twice: {twice:?}");
                // In doubt only what was on the wire at the crash.
                assert!(
                    acc.in_doubt <= window,
                    "round {round}: {} in doubt > window {window}",
                    acc.in_doubt
                );
                assert_eq!(
                    acc.dead, acc.in_doubt,
                    "round {round}: only in-doubt deaths expected"
                );
                // Every delivered line was sent exactly once, and every in-doubt
                // line at most once, before the crash.
                for line in 1..=lines {
                    let id = MessageId {
                        job: report.job.clone(),
                        line,
                    };
                    let n = per_id.get(&id).copied().unwrap_or(0);
                    match backend.outcome(&id).await.unwrap() {
                        Some(LineOutcome::Delivered { .. }) => {
                            assert_eq!(n, 1, "round {round} line {line}")
                        }
                        Some(LineOutcome::Dead { .. }) => assert!(n <= 1),
                        other => panic!("round {round} line {line}: {other:?}"),
                    }
                }
            }
            DeliveryMode::AtLeastOnce => {
                // G5's premise: nothing lost, every line delivered; repeats
                // only of what was on the wire at the crash.
                assert_eq!(acc.delivered, lines, "round {round}: {report:?}");
                let repeats: u64 = per_id
                    .values()
                    .map(|&n| u64::from(n.saturating_sub(1)))
                    .sum();
                assert!(
                    repeats <= window,
                    "round {round}: {repeats} repeats > window {window}"
                );
                assert_eq!(per_id.len() as u64, lines);
            }
            other => panic!("no check written for {other:?}"),
        }
        eprintln!(
            "{mode:?} round {round} ({at:?}): crashed with {enqueued_at_crash} pushed and \
             {calls_at_crash} calls made; delivered {} in doubt {}",
            acc.delivered, acc.in_doubt
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_many_points_at_most_once() {
    crash_and_recover(DeliveryMode::AtMostOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_many_points_at_least_once() {
    crash_and_recover(DeliveryMode::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_killed_mid_file_resumes_without_repeats() {
    let lines = 20_000u64;
    // Repeated users late in the file must still count as duplicates after
    // a resume, so the filter has to be rebuilt from the part already read.
    let mut body = users_csv(lines as usize);
    body.extend_from_slice(b"user-1,Your alert number 1\nuser-2500,Your alert number 2500\n");
    let input = Input::from_bytes("resume.csv", body);
    let backend = MemoryBackend::new();
    let mut config = fast_config();
    config.batch_size = 50;
    let sink = ScriptedSink::ok(Duration::ZERO);
    kill_batchers_mid_file(&backend, &sink, &config, &input, lines).await;
    let report = run_once(&engine(&backend, sink.clone(), config), &input).await;
    assert_eq!(report.lines, lines + 2);
    assert_eq!(report.enqueued, lines);
    assert_eq!(report.duplicate, 2);
    assert_eq!(report.delivered, lines);
    account(&backend, &report, 1..=lines + 2).await;
    assert!(sink.calls_per_id().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_leaves_nothing_leased_or_in_doubt() {
    let lines = 2_000u64;
    let input = Input::from_bytes("stop.csv", users_csv(lines as usize));
    let backend = MemoryBackend::new();
    let sink = ScriptedSink::ok(Duration::from_millis(2));
    let first = engine(&backend, sink.clone(), fast_config());
    let job = first.submit(&input).await.unwrap().job;
    let (cancel, run) = deliver_in_background(&first);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.call_count() < 300 {
        assert!(
            Instant::now() < deadline,
            "no progress: {} calls",
            sink.call_count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    run.await.unwrap().unwrap();
    let stats = backend.stats().await.unwrap();
    assert_eq!(stats.leased, 0, "a lease survived the shutdown: {stats:?}");
    let mid = backend.report(&job).await.unwrap().unwrap();
    assert!(mid.delivered >= 300 && mid.delivered < lines, "{mid:?}");

    let report = run_once(&engine(&backend, sink.clone(), fast_config()), &input).await;
    assert_eq!(
        (report.delivered, report.dead, report.in_doubt),
        (lines, 0, 0)
    );
    account(&backend, &report, 1..=lines).await;
    let seen: HashSet<_> = sink.calls().into_iter().map(|c| c.id).collect();
    assert_eq!(seen.len() as u64, lines);
    assert_eq!(sink.call_count() as u64, lines, "a message was sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_inputs_give_every_record_its_own_id() {
    // A minified JSON array (every element on line 1) and JSON Lines with a
    // wrong type: ids stay distinct and the bad record is reported.
    let mut array = String::from("[");
    for i in 1..=100 {
        array.push_str(&format!(
            "{{\"userId\":\"u{i}\",\"alertMessage\":\"hi {i}\"}},"
        ));
    }
    array.push_str("{\"userId\":42,\"alertMessage\":\"numeric id\"},{\"userId\":[1]}]");
    let jsonl =
        "{\"userId\":\"a\",\"alertMessage\":\"x\"}\n{\"userId\":true}\n{\"userId\":\"b\"}\n";
    let backend = MemoryBackend::new();
    let sink = ScriptedSink::ok(Duration::ZERO);
    let engine = engine(&backend, sink.clone(), fast_config());

    let array_input = Input::from_bytes("users.json", array.into_bytes());
    let report = run_once(&engine, &array_input).await;
    assert_eq!(
        (report.lines, report.delivered, report.invalid),
        (102, 101, 1),
        "{report:?}"
    );
    account(&backend, &report, 1..=102).await;

    let jsonl_input =
        Input::from_bytes("users.jsonl", jsonl.as_bytes().to_vec()).with_message("default");
    let report = run_once(&engine, &jsonl_input).await;
    assert_eq!(
        (report.lines, report.delivered, report.invalid),
        (3, 2, 1),
        "{report:?}"
    );
    account(&backend, &report, 1..=3).await;
    assert_eq!(sink.calls_per_id().len(), 103);
}

/// A queue whose replies to some pushes are lost after the push was applied,
/// as when a connection drops between the backend's write and its answer.
#[derive(Clone, Debug)]
struct LostReplies {
    inner: MemoryBackend,
    pushes: Arc<std::sync::atomic::AtomicU64>,
}

// The queue and the offsets are the one memory backend it wraps.
impl wds_core::backend::Backend for LostReplies {}

#[async_trait::async_trait]
impl OffsetStore for LostReplies {
    async fn claim(
        &self,
        identity: &str,
        meta: wds_core::JobMeta,
    ) -> wds_core::Result<wds_core::backend::Claim> {
        self.inner.claim(identity, meta).await
    }
    async fn checkpoint(
        &self,
        job: &wds_core::JobId,
    ) -> wds_core::Result<wds_core::backend::Checkpoint> {
        self.inner.checkpoint(job).await
    }
    async fn report(&self, job: &wds_core::JobId) -> wds_core::Result<Option<JobReport>> {
        self.inner.report(job).await
    }
    async fn reports(&self) -> wds_core::Result<Vec<JobReport>> {
        self.inner.reports().await
    }
    async fn outcome(
        &self,
        id: &wds_core::MessageId,
    ) -> wds_core::Result<Option<wds_core::backend::LineOutcome>> {
        self.inner.outcome(id).await
    }
    async fn rejects(
        &self,
        job: &wds_core::JobId,
        limit: usize,
    ) -> wds_core::Result<Vec<wds_core::backend::Reject>> {
        self.inner.rejects(job, limit).await
    }
    async fn fail(&self, job: &wds_core::JobId, reason: &str) -> wds_core::Result<JobReport> {
        self.inner.fail(job, reason).await
    }
}

#[async_trait::async_trait]
impl Queue for LostReplies {
    async fn push(
        &self,
        push: &wds_core::backend::Push,
    ) -> wds_core::Result<wds_core::backend::Pushed> {
        let pushed = self.inner.push(push).await?;
        if self.pushes.fetch_add(1, Ordering::SeqCst) % 3 == 1 {
            return Err(wds_core::Error::unavailable(
                "push",
                "connection reset after the write",
            ));
        }
        Ok(pushed)
    }
    async fn lease(
        &self,
        n: usize,
        ttl: Duration,
    ) -> wds_core::Result<Vec<wds_core::backend::Lease>> {
        self.inner.lease(n, ttl).await
    }
    async fn mark_sending(&self, l: &wds_core::backend::Lease) -> wds_core::Result<()> {
        self.inner.mark_sending(l).await
    }
    async fn extend(&self, l: &wds_core::backend::Lease, ttl: Duration) -> wds_core::Result<u64> {
        self.inner.extend(l, ttl).await
    }
    async fn settle(
        &self,
        l: &wds_core::backend::Lease,
        o: &[wds_core::backend::Settle],
    ) -> wds_core::Result<()> {
        self.inner.settle(l, o).await
    }
    async fn release(&self, l: &wds_core::backend::Lease) -> wds_core::Result<()> {
        self.inner.release(l).await
    }
    async fn dead_letters(
        &self,
        j: Option<&wds_core::JobId>,
        n: usize,
    ) -> wds_core::Result<Vec<wds_core::DeadLetter>> {
        self.inner.dead_letters(j, n).await
    }
    async fn replay(&self, j: Option<&wds_core::JobId>) -> wds_core::Result<u64> {
        self.inner.replay(j).await
    }
    async fn stats(&self) -> wds_core::Result<wds_core::backend::QueueStats> {
        self.inner.stats().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_push_reply_does_not_stall_or_repeat_the_job() {
    let lines = 1_000u64;
    let input = Input::from_bytes("lost.csv", users_csv(lines as usize));
    let backend = MemoryBackend::new();
    let lossy = LostReplies {
        inner: backend.clone(),
        pushes: Default::default(),
    };
    let sink = ScriptedSink::ok(Duration::ZERO);
    let engine = Engine::builder()
        .backend(lossy)
        .shared_sink(sink.clone())
        .config(fast_config())
        .build()
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), engine.run_once(&input))
        .await
        .expect("the job stalled")
        .unwrap();
    assert_eq!(
        (report.lines, report.enqueued, report.delivered),
        (lines, lines, lines)
    );
    account(&backend, &report, 1..=lines).await;
    assert!(sink.calls_per_id().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_retry_after_is_capped_and_panics_nothing() {
    // `Retry-After: 18446744073709551615` and a year: each pauses every
    // delivery for the policy's max delay (200 ms here), no longer, and
    // overflows nothing.
    let lines = 40;
    let input = Input::from_bytes("endless.csv", users_csv(lines));
    let backend = MemoryBackend::new();
    let sink = ScriptedSink::new(|m, n| match (m.id.line % 10, n) {
        (3, 1) => Step::RateLimited(Duration::from_secs(u64::MAX)),
        (7, 1) => Step::RateLimited(Duration::from_secs(31_536_000)),
        _ => Step::Ok(Duration::ZERO),
    });
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        engine(&backend, sink.clone(), fast_config()).run_once(&input),
    )
    .await
    .expect("a Retry-After from the endpoint stalled the job")
    .unwrap();
    assert_eq!(
        (report.delivered, report.dead),
        (lines as u64, 0),
        "{report:?}"
    );
    account(&backend, &report, 1..=lines as u64).await;
    let elapsed = started.elapsed();
    println!("FIGURES 40 lines with Retry-After u64::MAX and a year, max delay 200 ms: done in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

/// The engine's own in-process limiter, telling the test when a back-off
/// began (the deliverer calls `back_off` once the 429 is answered).
#[derive(Debug)]
struct TellsBackOff {
    inner: wds_core::limiter::LocalLimiter,
    began: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl wds_core::limiter::Limiter for TellsBackOff {
    async fn acquire(&self, n: u32) -> wds_core::Result<()> {
        self.inner.acquire(n).await
    }
    async fn back_off(&self, until_ms: u64) -> wds_core::Result<()> {
        self.inner.back_off(until_ms).await?;
        self.began.send_replace(true);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_back_off_at_once() {
    let lines = 200u64;
    let input = Input::from_bytes("paused.csv", users_csv(lines as usize));
    let backend = MemoryBackend::new();
    // A 429 asking for 30 s, within the policy's limits: a real pause.
    let sink = ScriptedSink::new(|m, n| {
        if m.id.line == 5 && n == 1 {
            Step::RateLimited(Duration::from_secs(30))
        } else {
            Step::Ok(Duration::ZERO)
        }
    });
    let mut config = fast_config();
    config.retry.max_delay = Duration::from_secs(60);
    let (began, mut back_off) = tokio::sync::watch::channel(false);
    let limiter = Arc::new(TellsBackOff {
        inner: wds_core::limiter::LocalLimiter::unlimited(),
        began,
    });
    let first = Engine::builder()
        .backend(backend.clone())
        .shared_sink(sink.clone())
        .limiter(limiter)
        .config(config.clone())
        .build()
        .expect("engine");
    let job = first.submit(&input).await.unwrap().job;
    let (cancel, run) = deliver_in_background(&first);
    // Shut down once the back-off is in force, not after a guessed time.
    tokio::time::timeout(Duration::from_secs(20), back_off.wait_for(|b| *b))
        .await
        .expect("the 429 never started a back-off")
        .unwrap();
    let calls_in_pause = sink.call_count();
    let stopping = Instant::now();
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("shutdown waited for the endpoint's back-off")
        .unwrap()
        .unwrap();
    println!(
        "FIGURES shutdown during a 30 s back-off took {:?}",
        stopping.elapsed()
    );
    assert!(stopping.elapsed() < Duration::from_secs(5));
    assert!(
        (calls_in_pause as u64) < lines,
        "the pause held nothing back: the test cannot see it"
    );
    let stats = backend.stats().await.unwrap();
    assert_eq!(stats.leased, 0, "a lease survived the shutdown: {stats:?}");
    let mid = backend.report(&job).await.unwrap().unwrap();
    assert_eq!((mid.dead, mid.in_doubt), (0, 0), "{mid:?}");
    // Messages held by the pause were not sent and are not lost: a new
    // engine delivers every one but the 429'd line (due in 30 s), once.
    let (cancel, run) = deliver_in_background(&engine(&backend, sink.clone(), config));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = backend.report(&job).await.unwrap().unwrap();
        if report.delivered == lines - 1 {
            break;
        }
        assert!(Instant::now() < deadline, "held messages lost: {report:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    run.await.unwrap().unwrap();
    let per_id = sink.calls_per_id();
    assert_eq!(per_id.len() as u64, lines);
    assert!(per_id.values().all(|&n| n == 1), "a message was sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_resumed_past_a_csv_header_still_reads_its_attributes() {
    // A resumed batcher seeks past the header row: it must read the rest of
    // the file with the header's columns all the same, or every later line
    // would be invalid (a field too many) or lose its attributes.
    let lines = 20_000u64;
    let mut body = String::from("userId,alertMessage,orderId\n");
    for i in 1..=lines {
        body.push_str(&format!("user-{i},Your alert number {i},A-{i}\n"));
    }
    // Repeats late in the file: a duplicate of line 2 (same order) and
    // another order of the same user and message (not a duplicate).
    body.push_str("user-1,Your alert number 1,A-1\nuser-1,Your alert number 1,A-again\n");
    let input = Input::from_bytes("orders.csv", body.into_bytes());
    let backend = MemoryBackend::new();
    let mut config = fast_config();
    config.batch_size = 50;
    // Each message's orderId, by line, as the sink got it.
    let got: Arc<std::sync::Mutex<std::collections::HashMap<u64, Option<serde_json::Value>>>> =
        Arc::default();
    let sink = ScriptedSink::new({
        let got = got.clone();
        move |m, _| {
            got.lock()
                .unwrap()
                .insert(m.id.line, m.attributes.get("orderId").cloned());
            Step::Ok(Duration::ZERO)
        }
    });
    kill_batchers_mid_file(&backend, &sink, &config, &input, lines).await;
    let report = engine(&backend, sink.clone(), config)
        .run_once(&input)
        .await
        .unwrap();
    assert_eq!(report.lines, lines + 2);
    assert_eq!(report.invalid, 0, "{report:?}");
    assert_eq!(report.duplicate, 1, "{report:?}");
    assert_eq!(report.delivered, lines + 1);
    assert!(sink.calls_per_id().values().all(|&n| n == 1));
    let got = got.lock().unwrap();
    assert_eq!(got.len() as u64, lines + 1);
    for i in 1..=lines {
        // The header is line 1, so order i is on line i + 1.
        assert_eq!(
            got.get(&(i + 1)),
            Some(&Some(serde_json::json!(format!("A-{i}")))),
            "line {}",
            i + 1
        );
    }
    assert_eq!(
        got.get(&(lines + 3)),
        Some(&Some(serde_json::json!("A-again")))
    );
}

/// Starts a batcher on `input` four times and aborts each as soon as it has
/// pushed something (the reader first reads the whole file for its duplicate
/// filter, then pushes, so a kill at a fixed time may land before the first
/// push or after the last, whatever the machine's load). Fails unless at
/// least one kill left the file part read.
async fn kill_batchers_mid_file(
    backend: &MemoryBackend,
    sink: &Arc<ScriptedSink>,
    config: &EngineConfig,
    input: &Input,
    lines: u64,
) {
    let mut mid_file = 0;
    for round in 0..4 {
        // Three more pushes (of a file of hundreds), then every call hangs:
        // the kill lands mid-file however fast or loaded the machine is.
        let view = Freezable::new(backend);
        view.freeze_after_pushes(3);
        let engine = engine(&view, sink.clone(), config.clone());
        let task = {
            let input = input.clone();
            tokio::spawn(async move {
                engine
                    .batcher()
                    .run(&input, &CancellationToken::new())
                    .await
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !task.is_finished() && !view.is_frozen() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the batcher neither froze nor finished"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        task.abort();
        match task.await {
            Err(e) if e.is_cancelled() => {}
            Ok(Ok(_)) => {} // read to the end before the abort
            other => panic!("the batcher failed: {other:?}"),
        }
        // Count the kills that left the file part read.
        if let Some(r) = backend.reports().await.unwrap().first() {
            if r.state == JobState::Reading && r.enqueued > 0 && r.enqueued < lines {
                mid_file += 1;
            }
        }
    }
    assert!(mid_file > 0, "no kill landed mid-file");
}
