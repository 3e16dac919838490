//! The README's distributed recipe as real processes: a redis-server of its
//! own, one notifier, one initiator and three workers, a file dropped into
//! the inbox, and every user delivered exactly once.
//!
//! `WDS_E2E_ROWS` sets the file's size (default 30,000; the README's figure
//! is 100,000).

use std::time::{Duration, Instant};

use wds_redis::RedisServer;
use wds_tests::process::{http_get, Service, ANY_PORT, TEST_SECRET};

fn rows() -> u64 {
    std::env::var("WDS_E2E_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000)
}

fn get_json(addr: &str, path: &str) -> Option<serde_json::Value> {
    match http_get(addr, path)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

#[test]
fn initiator_three_workers_and_notifier_deliver_every_user_once() {
    let rows = rows();
    let redis = RedisServer::builder().append_only(true).start();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WDS_REDIS_URL", redis.url()),
        ("WDS_API_LISTEN", ANY_PORT.to_string()),
        ("WDS_NOTIFIER_LISTEN", ANY_PORT.to_string()),
        ("WDS_SETTLE_MS", "200".to_string()),
        ("WDS_SECRETS", TEST_SECRET.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Each server binds a port of its own and says which in its log.
    let mut notifier = Service::start("notifier", dir.path(), &["notifier"], &env);
    let webhook = format!(
        "http://{}/webhook",
        notifier.address("notifier listening", "addr")
    );
    let mut initiator = Service::start("initiator", dir.path(), &["initiator"], &env);
    let api = initiator.address("initiator running", "api");
    let mut worker_env = env.clone();
    worker_env.push(("WDS_WEBHOOK_URL", &webhook));
    let mut workers: Vec<Service> = (1..=3)
        .map(|i| Service::start(&format!("worker-{i}"), dir.path(), &["worker"], &worker_env))
        .collect();

    // Drop the file the way a person would: written elsewhere, moved in.
    let inbox = dir.path().join("wds-data/inbox");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !inbox.exists() {
        assert!(
            Instant::now() < deadline,
            "the initiator never created its inbox:\n{}",
            initiator.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let staging = dir.path().join("users.csv");
    let mut body = String::from("userId,alertMessage\n");
    for i in 1..=rows {
        body.push_str(&format!("user-{i},\"Hello {i}, your order has shipped\"\n"));
    }
    std::fs::write(&staging, body).unwrap();
    std::fs::rename(&staging, inbox.join("users.csv")).unwrap();

    // Follow the job through the control API until every line is accounted for.
    let started = Instant::now();
    let job = loop {
        if let Some(jobs) = get_json(&api, "/jobs") {
            if let Some(job) = jobs.as_array().and_then(|a| a.first()) {
                if job["state"] == "done" {
                    break job.clone();
                }
            }
        }
        let logs = || {
            workers
                .iter()
                .map(Service::log_text)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "job not done in time:\n{}\n{}",
            initiator.log_text(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(job["lines"].as_u64(), Some(rows), "{job}");
    assert_eq!(job["delivered"].as_u64(), Some(rows), "{job}");
    assert_eq!(job["dead"].as_u64(), Some(0), "{job}");

    // Stop every role gracefully; each must exit 0.
    for w in &mut workers {
        w.signal("TERM");
    }
    initiator.signal("TERM");
    notifier.signal("TERM");
    for s in workers.iter_mut().chain([&mut initiator, &mut notifier]) {
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

    // The notifier's CSV (flushed on shutdown): one line per user.
    let output = dir.path().join("wds-data/outbox/alerts.csv");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(&output)
        .unwrap();
    let mut users = std::collections::HashSet::new();
    let mut lines = 0u64;
    for record in reader.records() {
        users.insert(record.unwrap()[0].to_string());
        lines += 1;
    }
    assert_eq!(lines, rows);
    assert_eq!(users.len() as u64, rows);
    // Every worker took part.
    for w in &workers {
        assert!(w.log_text().contains("worker running"), "{}", w.log_text());
    }
    eprintln!(
        "{rows} users through 3 workers in {secs:.1}s ({:.0}/s)",
        rows as f64 / secs
    );
}
