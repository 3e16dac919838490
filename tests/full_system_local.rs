//! The README's run command as a real process: `full_system demo` on the
//! in-memory backend delivers every user once and exits 0 with the report.
//!
//! Its worker calls its notifier through a recording pass-through, so an
//! id sent twice would be seen even though the notifier drops repeats from
//! its output.

use std::time::Duration;

use wds_harness::checks::{assert_sent_once, users_in, Recorder};
use wds_harness::process::Service;

#[test]
fn demo_delivers_every_user_once_and_exits_zero() {
    demo_delivers("reqwest", 20_000, None);
}

/// The same through `--http-client hyper` (hyper's own client), on three
/// delivery threads.
#[test]
fn demo_on_the_hyper_client_and_three_threads_delivers_every_user_once() {
    demo_delivers("hyper", 5_000, Some(3));
}

fn demo_delivers(client: &str, rows: usize, threads: Option<usize>) {
    let dir = tempfile::tempdir().expect("temp dir");
    // The demo's notifier binds a free port and prints it: requests wait at
    // the recorder until the test has read it.
    let recorder = Recorder::new(None);
    let url = recorder.url("demo");
    let threads = threads.map(|n| n.to_string());
    let mut env = vec![
        ("WDS_WEBHOOK_URL", url.as_str()),
        ("WDS_HTTP_CLIENT", client),
    ];
    if let Some(n) = &threads {
        env.push(("WDS_DELIVERY_THREADS", n.as_str()));
    }
    let mut demo = Service::start(
        "demo",
        dir.path(),
        &["demo", "--rows", &rows.to_string()],
        &env,
    );
    let line = demo.wait_for_line("notifier on http://", Duration::from_secs(120));
    let notifier = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches(','))
        .unwrap_or_else(|| panic!("no notifier URL in {line:?}"));
    recorder.set_upstream(notifier);
    let status = demo
        .wait(Duration::from_secs(300))
        .unwrap_or_else(|| panic!("demo did not finish:\n{}", demo.log_text()));
    let log = demo.log_text();
    assert!(status.success(), "demo failed ({status}):\n{log}");
    assert!(log.contains("every line accounted for"), "{log}");
    assert!(log.contains(&format!("client={client}")), "{log}");
    if let Some(n) = &threads {
        assert!(log.contains(&format!("delivery_threads={n}")), "{log}");
    }
    let delivered = rows.to_string();
    assert!(
        log.lines()
            .any(|l| l.split_whitespace().eq(["delivered", delivered.as_str()])),
        "{log}"
    );

    // Every id sent once and accepted once: nothing for the notifier to drop.
    let sent = recorder.sent();
    assert_eq!(sent.len(), rows, "requests sent");
    assert_sent_once(&recorder.per_id(), "sent");
    assert!(
        sent.iter().all(|s| s.status == Some(200) && !s.duplicate),
        "a request was not accepted"
    );

    // The notifier's CSV, read independently: one line per user.
    // The CSV, not the log of recent webhook ids kept beside it.
    let outbox = dir.path().join("wds-data/outbox");
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("the outbox")
        .map(|e| e.expect("outbox entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let users = users_in(&files[0]);
    assert_eq!(users.len(), rows);
    assert!(users.values().all(|n| *n == 1), "a user written twice");
    for i in 1..=rows {
        assert!(users.contains_key(&format!("user-{i}")), "user-{i} missing");
    }
    // The file was archived once read.
    assert_eq!(
        std::fs::read_dir(dir.path().join("wds-data/done"))
            .expect("the archive")
            .count(),
        1
    );
}

#[test]
fn bad_settings_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["worker"], "needs a shared backend"),
        (&["demo", "--redis", "redis://127.0.0.1:1"], "redis"),
        (&["demo", "--redis", "not a url"], "redis"),
        (
            &["--webhook-url", "ftp://x", "demo", "--rows", "10"],
            "webhook",
        ),
        (&["--mode", "twice", "all"], "delivery mode"),
        (&["--delivery-threads", "0", "all"], "threads"),
        (&["--delivery-threads", "many", "all"], "threads"),
        (
            &[
                "--http-client",
                "hyper",
                "--webhook-url",
                "https://example.test/hook",
                "demo",
            ],
            "hyper client",
        ),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let mut p = Service::start(&format!("bad-{i}"), dir.path(), args, &[]);
        let status = p
            .wait(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{args:?} hung:\n{}", p.log_text()));
        let log = p.log_text();
        assert!(!status.success(), "{args:?} succeeded:\n{log}");
        assert!(log.to_lowercase().contains(needle), "{args:?}: {log}");
        assert!(!log.contains("panicked"), "{args:?} panicked:\n{log}");
    }
    // A port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut p = Service::start(
        "busy",
        dir.path(),
        &["notifier", "--notifier-listen", &addr],
        &[],
    );
    let status = p
        .wait(Duration::from_secs(60))
        .expect("hung on a busy port");
    assert!(!status.success());
    assert!(
        p.log_text().contains("cannot listen on"),
        "{}",
        p.log_text()
    );
}
