//! Hostile peers and careless operators against the real `full_system`
//! binary: what a service refuses to start with, what it never prints, and
//! how its HTTP servers hold up against slow and idle connections.

use std::time::Duration;

use wds_tests::process::{http_get, Service, ANY_PORT, TEST_SECRET};

/// Runs `args` to completion and returns its log.
fn run_to_end(
    dir: &std::path::Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let mut p = Service::start(name, dir, args, env);
    let status = p
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{args:?} hung:\n{}", p.log_text()));
    (status.success(), p.log_text())
}

#[test]
fn a_notifier_without_a_secret_refuses_to_start_unless_told_to_accept_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let listen = [("WDS_NOTIFIER_LISTEN", ANY_PORT)];
    let (ok, log) = run_to_end(dir.path(), "unsigned", &["notifier"], &listen);
    assert!(!ok, "a notifier without a secret started:\n{log}");
    assert!(log.contains("no signing secret"), "{log}");
    assert!(log.contains("--insecure-accept-unsigned"), "{log}");

    for (name, args, env) in [
        (
            "flag",
            &["notifier", "--insecure-accept-unsigned"][..],
            vec![],
        ),
        (
            "env",
            &["notifier"][..],
            vec![("WDS_INSECURE_ACCEPT_UNSIGNED", "true")],
        ),
    ] {
        let mut env = env;
        env.extend_from_slice(&listen);
        let mut p = Service::start(name, dir.path(), args, &env);
        let addr = p.address("notifier listening", "addr");
        assert!(
            p.log_text().contains("UNSIGNED"),
            "no warning at start:\n{}",
            p.log_text()
        );
        assert_eq!(http_get(&addr, "/healthz").map(|r| r.0), Some(200));
        p.signal("TERM");
        assert!(p.wait(Duration::from_secs(30)).is_some_and(|s| s.success()));
    }

    // With a secret: no warning.
    let mut env = vec![("WDS_SECRETS", TEST_SECRET)];
    env.extend_from_slice(&listen);
    let mut p = Service::start("signed", dir.path(), &["notifier"], &env);
    p.address("notifier listening", "addr");
    assert!(!p.log_text().contains("UNSIGNED"), "{}", p.log_text());
}

#[test]
fn help_never_prints_secrets_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WDS_SECRETS", TEST_SECRET),
        ("WDS_TOKEN", "tok-SEKRIT-3"),
        ("WDS_REDIS_URL", "redis://:pw-SEKRIT-1@127.0.0.1:1/0"),
        (
            "WDS_WEBHOOK_URL",
            "https://user:pw-SEKRIT-2@example.invalid/h?api_key=SEKRIT-4",
        ),
    ];
    for args in [
        &["--help"][..],
        &["notifier", "--help"][..],
        &["worker", "--help"][..],
    ] {
        let (ok, log) = run_to_end(dir.path(), "help", args, &env);
        assert!(ok, "{args:?}:\n{log}");
        assert!(
            log.contains("WDS_SECRETS"),
            "{args:?} printed no help:\n{log}"
        );
        for secret in [&TEST_SECRET[6..], "SEKRIT"] {
            assert!(!log.contains(secret), "{args:?} printed a secret:\n{log}");
        }
    }
}
