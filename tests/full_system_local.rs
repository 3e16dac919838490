//! The README's run command as a real process: `full_system demo` on the
//! in-memory backend delivers every user once and exits 0 with the report.

use std::time::Duration;

use wds_tests::process::Service;

#[test]
fn demo_delivers_every_user_once_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 20_000;
    let mut demo = Service::start(
        "demo",
        dir.path(),
        &["demo", "--rows", &rows.to_string()],
        &[],
    );
    let status = demo
        .wait(Duration::from_secs(300))
        .unwrap_or_else(|| panic!("demo did not finish:\n{}", demo.log_text()));
    let log = demo.log_text();
    assert!(status.success(), "demo failed ({status}):\n{log}");
    assert!(log.contains("every line accounted for"), "{log}");
    assert!(
        log.contains(&format!("delivered       {rows:>5}"))
            || log.contains(&format!("delivered        {rows}")),
        "{log}"
    );

    // The notifier's CSV, read independently: one line per user.
    // The CSV, not the log of recent webhook ids kept beside it.
    let file = std::fs::read_dir(dir.path().join("wds-data/outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "csv"))
        .expect("no CSV in the outbox");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(&file)
        .unwrap();
    let mut users = std::collections::HashSet::new();
    let mut lines = 0;
    for record in reader.records() {
        let record = record.unwrap();
        users.insert(record[0].to_string());
        lines += 1;
    }
    assert_eq!(lines, rows);
    assert_eq!(users.len(), rows);
    for i in [1, rows / 2, rows] {
        assert!(users.contains(&format!("user-{i}")));
    }
    // The file was archived once read.
    assert_eq!(
        std::fs::read_dir(dir.path().join("wds-data/done"))
            .unwrap()
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
