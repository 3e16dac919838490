//! Scenarios 2 and 3 of the fault tests: the initiator and the notifier
//! killed (`kill -9`) mid-job and restarted, and Redis shut down or killed
//! (`kill -9`) mid-job and started again on its append-only file. The job finishes, once, with every
//! line accounted for (G2, G4), and every role reconnects on its own.
//!
//! `WDS_FAULT_SCALE=n` multiplies the files (20,000 lines).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wds_core::{backend::LineOutcome, DeadKind, JobId};
use wds_harness::checks::{assert_sent_once, users_in, worker_in_doubt_window, Recorder};
use wds_harness::cluster::{count, outcomes, scale, Cluster};
use wds_harness::receiver::TestReceiver;
use wds_harness::users_csv;

#[test]
fn initiator_and_notifier_killed_mid_job_finish_it_once() {
    let lines = 20_000 * scale();
    let mut cluster = Cluster::new(&[]);
    let mut notifier = cluster.start("notifier", &[]);
    // Workers call the notifier through a recording pass-through: the
    // notifier forgets the ids it saw when it dies, the recorder sees every
    // request, and whether the notifier answered it.
    let recorder = Recorder::notifier(&cluster.notifier_addr);
    let url = recorder.url("w");
    let mut initiator = cluster.start("initiator", &[]);
    let workers: Vec<usize> = (0..2)
        .map(|_| cluster.start("worker", &[("WDS_WEBHOOK_URL", &url)]))
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = cluster.backend(&rt);
    cluster.drop_file("users.csv", &users_csv(lines as usize));
    let started = Instant::now();
    let progress = |cluster: &Cluster| -> u64 {
        let reports = cluster.reports(&rt, &backend);
        reports.first().map(|r| r.delivered).unwrap_or(0)
    };
    let refused = |recorder: &Recorder| recorder.sent().iter().filter(|s| !s.reached).count();

    // Kill 1: the initiator as soon as it has claimed the file (it may be
    // reading it still); kill 2: the initiator again mid-delivery; then the
    // notifier, restarted once workers have been refused by it for a while.
    cluster.eventually("the job to be claimed", Duration::from_secs(120), || {
        (!cluster.reports(&rt, &backend).is_empty()).then_some(())
    });
    let mut kills = Vec::new();
    let mut notifier_killed = None;
    for (role, at) in [
        ("initiator", 0),
        ("initiator", lines * 3 / 10),
        ("notifier", lines / 2),
    ] {
        cluster.eventually("delivery progress", Duration::from_secs(300), || {
            (progress(&cluster) >= at).then_some(())
        });
        let index = if role == "initiator" {
            initiator
        } else {
            notifier
        };
        cluster.services[index].kill_9();
        if role == "notifier" {
            notifier_killed = Some(Instant::now());
            let before = refused(&recorder);
            cluster.eventually(
                "workers refused by the dead notifier",
                Duration::from_secs(60),
                || (refused(&recorder) >= before + 100).then_some(()),
            );
        }
        let restarted = cluster.start(role, &[]);
        match role {
            "initiator" => initiator = restarted,
            _ => notifier = restarted,
        }
        kills.push(format!("{role} at {} delivered", progress(&cluster)));
    }
    let jobs = cluster.wait_done(1, Duration::from_secs(300));
    let secs = started.elapsed().as_secs_f64();
    // One job, read once: not two jobs, not two pushes of the same lines.
    assert_eq!(jobs.len(), 1, "one file, one job: {jobs:?}");
    let job = &jobs[0];
    assert_eq!(count(job, "lines"), lines, "{job}");
    assert_eq!(count(job, "enqueued"), lines, "no line pushed twice: {job}");
    let (delivered, dead) = (count(job, "delivered"), count(job, "dead"));
    assert_eq!(delivered + dead, lines, "G2: {job}");
    assert_eq!(count(job, "in_doubt"), 0, "no worker died: {job}");

    // Not forgotten: the restarted initiator archived the finished file.
    let archived = cluster.path().join("wds-data/done/users.csv");
    cluster.eventually("the file to be archived", Duration::from_secs(60), || {
        archived.exists().then_some(())
    });
    assert!(!cluster.inbox().join("users.csv").exists());
    for w in &workers {
        assert!(cluster.running(*w), "a worker stopped:\n{}", cluster.logs());
    }
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());

    // The restarted notifier remembers the ids the killed one accepted:
    // sent again (the same bytes, as a sender whose answer was lost would),
    // each is answered as a duplicate and not written again. Without this,
    // a notifier that forgot them would pass: a retry after a lost answer
    // may legitimately be written twice (a death between writing the line
    // and logging its id), so the output alone cannot tell.
    let killed_at = notifier_killed.expect("the notifier was killed");
    let before_kill: Vec<_> = recorder
        .answered(Duration::from_secs(30))
        .into_iter()
        .filter(|s| s.at < killed_at && s.status == Some(200) && !s.duplicate)
        .take(20)
        .collect();
    assert!(!before_kill.is_empty(), "nothing accepted before the kill");
    for s in &before_kill {
        assert_eq!(
            recorder.resend(s),
            Some((200, true)),
            "{} (accepted before the notifier's kill) sent again to the restarted notifier",
            s.id
        );
    }

    // Stop the notifier gracefully so its output is flushed, then read it.
    cluster.services[notifier].signal("TERM");
    let stopped = cluster.services[notifier].wait(Duration::from_secs(30));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "notifier stop: {stopped:?}"
    );
    let users = users_in(&cluster.path().join("wds-data/outbox/alerts.csv"));

    // What the workers sent, per id: a repeat only after a failed call
    // (G1: nothing answered 200 is sent again), and what each call gave.
    let sent = recorder.answered(Duration::from_secs(30));
    #[derive(Default)]
    struct PerId {
        calls: u32,
        accepted: u32,
        duplicate: u32,
        /// Reached the notifier, which died before answering.
        lost: u32,
        refused: u32,
    }
    let mut per_id: HashMap<&str, PerId> = HashMap::new();
    let mut by_time = sent.clone();
    by_time.sort_by_key(|s| s.at);
    for s in &by_time {
        let p = per_id.entry(s.id.as_str()).or_default();
        assert_eq!(
            p.accepted + p.duplicate,
            0,
            "{} sent again after the notifier answered 200",
            s.id
        );
        p.calls += 1;
        match (s.status, s.duplicate, s.reached) {
            (Some(200), false, _) => p.accepted += 1,
            (Some(200), true, _) => p.duplicate += 1,
            (None, _, true) => p.lost += 1,
            (None, _, false) => p.refused += 1,
            (Some(other), _, _) => panic!("{}: the notifier answered {other}", s.id),
        }
    }
    let sent_twice = per_id.values().filter(|p| p.calls > 1).count();
    let lost_answers: u32 = per_id.values().map(|p| p.lost).sum();
    let refused_calls: u32 = per_id.values().map(|p| p.refused).sum();
    // The notifier died under load: calls were refused while it was down,
    // and those ids were sent again.
    assert!(
        refused_calls > 0,
        "no call was refused while the notifier was down"
    );
    assert!(
        sent_twice > 0,
        "no id was sent again after the notifier's restart"
    );

    // The output, user by user. A line is written by an accepted call, and
    // maybe by a call whose answer was lost when the notifier died (it may
    // have written the line first). The notifier keeps the ids it saw across
    // its restart, so such a retry is answered as a duplicate; only a death
    // between writing the line and logging its id can write it twice:
    // accepted <= written <= accepted + lost, and accepted <= 1.
    let id = JobId::new(job["job"].as_str().expect("job id").to_string());
    let mut lost = Vec::new();
    let mut written_twice = 0u32;
    for (line, outcome) in outcomes(&rt, &backend, &id, 1..=lines) {
        let key = format!("{id}:{line}");
        let p = per_id.get(key.as_str());
        let (accepted, maybe) = p.map_or((0, 0), |p| (p.accepted, p.lost));
        let written = users.get(&format!("user-{line}")).copied().unwrap_or(0);
        assert!(accepted <= 1, "{key} accepted {accepted} times");
        assert!(
            accepted <= written && written <= accepted + maybe,
            "user-{line} written {written} times: accepted {accepted}, answers lost {maybe}"
        );
        written_twice += u32::from(written > 1);
        match outcome {
            // No acknowledged alert lost with the notifier.
            Some(LineOutcome::Delivered { .. }) if written == 0 => lost.push(line),
            Some(LineOutcome::Delivered { .. }) => {
                // Accepted; or written by the notifier that died (its answer
                // lost) and, the ids surviving its restart, answered as a
                // duplicate on the retry.
                let duplicate = p.map_or(0, |p| p.duplicate);
                assert!(
                    accepted == 1 || (duplicate >= 1 && maybe >= 1),
                    "{key}: accepted {accepted}, duplicate {duplicate}, answers lost {maybe}"
                );
            }
            Some(LineOutcome::Dead { reason }) => {
                assert_eq!(reason.kind, DeadKind::Exhausted, "{key}: {reason:?}");
                assert_eq!(accepted, 0, "{key} dead, yet accepted");
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    assert!(
        lost.is_empty(),
        "{} delivered lines missing from the notifier's output, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        written_twice <= lost_answers,
        "{written_twice} > {lost_answers}"
    );
    eprintln!(
        "FIGURES initiator/notifier kills: {kills:?}; done in {secs:.1}s; delivered {delivered}, \
         dead {dead}; {} requests: {sent_twice} ids sent more than once, {refused_calls} calls \
         refused while the notifier was down, {lost_answers} answers lost in its death; \
         notifier output {} users, {written_twice} written twice (bound: answers lost)",
        sent.len(),
        users.len(),
    );
}

/// How Redis goes down mid-job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Down {
    /// `SHUTDOWN`: the append-only file is complete and closed.
    Shutdown,
    /// `kill -9`: the append-only file is what was written before the
    /// crash (`appendfsync always`: every acknowledged write).
    Kill,
}

/// Delivers a file over three workers, takes Redis down at 30% and starts
/// it again on its append-only file once every worker has seen it gone;
/// then checks G1 at the receiver and G2 line by line.
fn redis_down_mid_job(down: Down) {
    let lines = 20_000 * scale();
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url)]);
    let initiator = cluster.start("initiator", &[]);
    let workers: Vec<usize> = (0..3).map(|_| cluster.start("worker", &[])).collect();
    cluster.drop_file("users.csv", &users_csv(lines as usize));
    let started = Instant::now();
    // A backend call that failed and is being retried, per process.
    let failures = |cluster: &Cluster, index: usize| {
        cluster.services[index]
            .log_text()
            .matches("retrying")
            .count()
    };

    cluster.eventually("delivery progress", Duration::from_secs(300), || {
        (receiver.count() as u64 >= lines * 3 / 10).then_some(())
    });
    let before = receiver.count();
    let seen: Vec<usize> = workers.iter().map(|w| failures(&cluster, *w)).collect();
    match down {
        Down::Shutdown => cluster.redis.stop(),
        Down::Kill => cluster.redis.kill(),
    }
    assert!(
        !cluster.redis.is_running(),
        "redis still runs after {down:?}"
    );
    let stopped = Instant::now();
    // Down until every worker has failed a call to it (and keeps retrying).
    cluster.eventually(
        "every worker to notice Redis is gone",
        Duration::from_secs(60),
        || {
            workers
                .iter()
                .zip(&seen)
                .all(|(w, n)| failures(&cluster, *w) > *n)
                .then_some(())
        },
    );
    let down_for = stopped.elapsed();
    cluster.redis.restart();
    let during = receiver.count() - before;
    eprintln!(
        "redis {down:?} at {before} requests, down {:.1}s; {during} requests went out meanwhile",
        down_for.as_secs_f64()
    );

    // Done, or gone: a Redis that lost its data after the restart lists no
    // job at all, and waiting for one to be done would only time out.
    let job = cluster
        .eventually("the job to be done", Duration::from_secs(300), || {
            let jobs = cluster.jobs()?;
            match jobs.first() {
                None => Some(None),
                Some(job) => (job["state"] == "done").then(|| Some(job.clone())),
            }
        })
        .unwrap_or_else(|| panic!("the job is gone: Redis came back without its data"));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(count(&job, "lines"), lines, "{job}");
    assert_eq!(count(&job, "enqueued"), lines, "{job}");
    cluster.assert_running(workers.iter().copied().chain([initiator]));

    // G1: nothing sent twice. G2 line by line: delivered lines were
    // received; a line not delivered is dead in doubt (a lease that ran out
    // while Redis was away), within the workers' windows.
    let per_id = receiver.per_id();
    assert_sent_once(&per_id, "received");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = cluster.backend(&rt);
    let id = JobId::new(job["job"].as_str().expect("job id").to_string());
    let (mut delivered, mut in_doubt) = (0u64, 0u64);
    for (line, outcome) in outcomes(&rt, &backend, &id, 1..=lines) {
        match outcome {
            Some(LineOutcome::Delivered { .. }) => {
                assert!(per_id.contains_key(&format!("{id}:{line}")), "line {line}");
                delivered += 1;
            }
            Some(LineOutcome::Dead { reason }) if reason.kind == DeadKind::InDoubt => in_doubt += 1,
            other => panic!("line {line}: {other:?}"),
        }
    }
    assert_eq!(delivered, count(&job, "delivered"), "{job}");
    assert_eq!(in_doubt, count(&job, "in_doubt"), "{job}");
    assert_eq!(delivered + in_doubt, lines, "{job}");
    let window = worker_in_doubt_window(&wds_core::EngineConfig::default());
    let bound = workers.len() as u64 * window;
    assert!(in_doubt <= bound, "in doubt {in_doubt} > {bound}");
    eprintln!(
        "FIGURES redis {down:?}: done in {secs:.1}s; delivered {delivered}, in doubt {in_doubt} \
         (bound {bound}), ids received twice 0"
    );
}

#[test]
fn redis_restarted_mid_job_every_role_reconnects_and_g2_holds() {
    redis_down_mid_job(Down::Shutdown);
}

#[test]
fn redis_killed_mid_job_restarts_on_its_aof_and_g1_g2_hold() {
    redis_down_mid_job(Down::Kill);
}
