//! Scenarios 2 and 3 of the fault tests: the initiator and the notifier
//! killed (`kill -9`) mid-job and restarted, and Redis shut down mid-job and
//! started again on its append-only file. The job finishes, once, with every
//! line accounted for (G2, G4), and every role reconnects on its own.
//!
//! `WDS_FAULT_SCALE=n` multiplies the files (20,000 lines).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wds_core::{DeadKind, JobId, LineOutcome};
use wds_tests::cluster::{count, outcomes, scale, Cluster};
use wds_tests::receiver::TestReceiver;
use wds_tests::users_csv;

#[test]
fn initiator_and_notifier_killed_mid_job_finish_it_once() {
    let lines = 20_000 * scale();
    let mut cluster = Cluster::new(&[]);
    let mut notifier = cluster.start("notifier", &[]);
    let mut initiator = cluster.start("initiator", &[]);
    let workers: Vec<usize> = (0..2).map(|_| cluster.start("worker", &[])).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = cluster.backend(&rt);
    cluster.drop_file("users.csv", &users_csv(lines as usize));
    let started = Instant::now();
    let progress = |cluster: &Cluster| -> u64 {
        let reports = cluster.reports(&rt, &backend);
        reports.first().map(|r| r.delivered).unwrap_or(0)
    };

    // Kill 1: the initiator as soon as it has claimed the file (it may be
    // reading it still); kill 2: the initiator again mid-delivery; then the
    // notifier, down for a second while workers keep calling it.
    cluster.eventually("the job to be claimed", Duration::from_secs(120), || {
        (!cluster.reports(&rt, &backend).is_empty()).then_some(())
    });
    let mut kills = Vec::new();
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
        cluster.services[index].signal("KILL");
        cluster.services[index].wait(Duration::from_secs(10));
        if role == "notifier" {
            std::thread::sleep(Duration::from_secs(1));
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

    // Stop the notifier gracefully so its output is flushed, then read it.
    cluster.services[notifier].signal("TERM");
    cluster.services[notifier].wait(Duration::from_secs(30));
    let output = cluster.path().join("wds-data/outbox/alerts.csv");
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let mut users: HashMap<&str, u32> = HashMap::new();
    for line in text.lines() {
        *users
            .entry(line.split(',').next().unwrap_or(""))
            .or_default() += 1;
    }
    // No acknowledged alert lost with the notifier: every delivered line's
    // user is in its output. (A repeat is possible: a request recorded just
    // before the kill, its answer lost, is retried; the ids seen die with
    // the process.)
    let id = JobId(job["job"].as_str().unwrap().to_string());
    let mut lost = Vec::new();
    for (line, outcome) in outcomes(&rt, &backend, &id, 1..=lines) {
        if let Some(LineOutcome::Delivered { .. }) = outcome {
            if !users.contains_key(format!("user-{line}").as_str()) {
                lost.push(line);
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} delivered lines missing from the notifier's output, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let repeated = users.values().filter(|n| **n > 1).count();
    eprintln!(
        "FIGURES initiator/notifier kills: {kills:?}; done in {secs:.1}s; delivered {delivered}, \
         dead {dead} (exhausted while the notifier was down); notifier output {} lines, {} users \
         ({repeated} written twice after the notifier's restart, 0 delivered but missing)",
        text.lines().count(),
        users.len(),
    );
}

#[test]
fn redis_restarted_mid_job_every_role_reconnects_and_g2_holds() {
    let lines = 20_000 * scale();
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url)]);
    let initiator = cluster.start("initiator", &[]);
    let workers: Vec<usize> = (0..3).map(|_| cluster.start("worker", &[])).collect();
    cluster.drop_file("users.csv", &users_csv(lines as usize));
    let started = Instant::now();

    cluster.eventually("delivery progress", Duration::from_secs(300), || {
        (receiver.count() as u64 >= lines * 3 / 10).then_some(())
    });
    let before = receiver.count();
    cluster.redis.stop(); // SHUTDOWN: the append-only file is complete
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    cluster.redis.restart();
    let during = receiver.count() - before;
    eprintln!(
        "redis down for {:.1}s at {before} requests; {during} requests went out meanwhile",
        down.elapsed().as_secs_f64()
    );

    let job = cluster.wait_done(1, Duration::from_secs(300)).remove(0);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(count(&job, "lines"), lines, "{job}");
    assert_eq!(count(&job, "enqueued"), lines, "{job}");
    for index in workers.iter().copied().chain([initiator]) {
        assert!(
            cluster.running(index),
            "{} stopped:\n{}",
            cluster.services[index].name,
            cluster.logs()
        );
    }

    // G1: nothing sent twice. G2 line by line: delivered lines were
    // received; a line not delivered is dead in doubt (a lease that ran out
    // while Redis was away), within the workers' windows.
    let per_id = receiver.per_id();
    let repeated = per_id.values().filter(|n| **n > 1).count();
    assert_eq!(repeated, 0, "ids received twice");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = cluster.backend(&rt);
    let id = JobId(job["job"].as_str().unwrap().to_string());
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
    let window = {
        let c = wds_core::EngineConfig::default();
        (c.sending_batches() * c.batch_size) as u64
    };
    let bound = workers.len() as u64 * window;
    assert!(in_doubt <= bound, "in doubt {in_doubt} > {bound}");
    eprintln!(
        "FIGURES redis restart: done in {secs:.1}s; delivered {delivered}, in doubt {in_doubt} \
         (bound {bound}), ids received twice {repeated}"
    );
}
