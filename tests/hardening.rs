//! Hostile peers and careless operators against the real `full_system`
//! binary: what a service refuses to start with, what it never prints, and
//! how its HTTP servers hold up against slow and idle connections.

use std::time::Duration;

use wds_harness::cluster::{count, Cluster};
use wds_harness::http::http_get;
use wds_harness::ports::ANY_PORT;
use wds_harness::process::{Service, TEST_SECRET};
use wds_harness::receiver::{Reply, TestReceiver};
use wds_harness::users_csv;

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

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
}

#[test]
fn three_hundred_held_connections_neither_exhaust_descriptors_nor_silence_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 32;
    let env = [
        ("WDS_API_LISTEN", ANY_PORT),
        ("WDS_NOTIFIER_LISTEN", ANY_PORT),
        ("WDS_HTTP_MAX_CONNECTIONS", "32"),
        // Long: only the cap and eviction are at work during the test.
        ("WDS_HTTP_HEADER_TIMEOUT_MS", "60000"),
        ("WDS_HTTP_IDLE_TIMEOUT_MS", "60000"),
    ];
    let mut all = Service::start("all", dir.path(), &["all"], &env);
    let api = all.address("initiator running", "api");
    let notifier = all.address("notifier listening", "addr");
    assert_eq!(http_get(&api, "/healthz").map(|r| r.0), Some(200));
    let before = open_fds(all.pid());

    let held: Vec<std::net::TcpStream> = (0..300)
        .flat_map(|_| [&api, &notifier])
        .map(|addr| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    // Every connection the server could take, it has taken by the time a
    // probe queued behind all of them is answered.
    for addr in [&api, &notifier] {
        let start = std::time::Instant::now();
        let answer = http_get(addr, "/healthz");
        assert_eq!(
            answer.as_ref().map(|r| r.0),
            Some(200),
            "/healthz at {addr} behind 300 held connections: {answer:?}\n{}",
            all.log_text()
        );
        println!(
            "FIGURES /healthz at {addr} answered in {:?} behind 300 held connections",
            start.elapsed()
        );
    }
    let during = open_fds(all.pid());
    println!(
        "FIGURES descriptors of `all`: {before} before, {during} with {} connections held (cap {cap} per server)",
        held.len()
    );
    assert!(
        during <= before + 2 * (cap + 1) + 8,
        "{during} descriptors open (from {before}): the cap does not hold"
    );
    drop(held);
    all.signal("TERM");
    let status = all.wait(Duration::from_secs(30)).expect("all did not stop");
    assert!(status.success(), "{status}:\n{}", all.log_text());
}

#[test]
fn the_shipped_binary_speaks_rediss() {
    // Nothing listens on port 1: the connection fails, but past the URL
    // check that a binary without TLS fails at.
    let dir = tempfile::tempdir().unwrap();
    let (ok, log) = run_to_end(
        dir.path(),
        "rediss",
        &["worker", "--redis", "rediss://127.0.0.1:1"],
        &[],
    );
    assert!(!ok, "{log}");
    assert!(
        !log.contains("`tls` feature"),
        "rediss:// is not supported:\n{log}"
    );
    assert!(log.to_lowercase().contains("redis"), "{log}");
}

#[test]
fn an_api_beyond_loopback_without_a_token_is_warned_about() {
    // Bound on every interface for a moment; nothing connects to it.
    let listen = [
        "all",
        "--api-listen",
        "0.0.0.0:0",
        "--notifier-listen",
        ANY_PORT,
    ];
    for (name, token, warned) in [("open", None, true), ("guarded", Some("s3cret"), false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = vec![("WDS_SECRETS", TEST_SECRET)];
        if let Some(token) = token {
            env.push(("WDS_TOKEN", token));
        }
        let mut p = Service::start(name, dir.path(), &listen, &env);
        p.wait_for_line("initiator running", Duration::from_secs(120));
        // The warning comes as the API starts serving, next to that line.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let warning = |p: &Service| p.log_text().contains("WITHOUT a token");
        while warned && !warning(&p) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        p.signal("TERM");
        assert!(p.wait(Duration::from_secs(30)).is_some());
        assert_eq!(warning(&p), warned, "{name}:\n{}", p.log_text());
    }
}

/// Finding 6 and the bounded detail, end to end: dead letters past the
/// detail limit are still counted by reason in `/jobs` and `/jobs/{id}`,
/// and neither the logs nor a stored reason show the webhook URL's
/// password or query string.
#[test]
fn dead_letters_are_counted_by_reason_and_keep_no_url_secret() {
    // Users 3k+1 are refused for good, users 3k+2 never get an answer (so
    // their retries run out); the rest are delivered.
    let receiver = TestReceiver::with_script(|r| {
        let n: u64 = r.user.trim_start_matches("user-").parse().unwrap_or(0);
        match n % 3 {
            1 => Reply::Status(404),
            2 => Reply::Reset,
            _ => Reply::Ok,
        }
    });
    let url = receiver.url().replace("http://", "http://bot:pw-SEKRIT-5@") + "?api_key=SEKRIT-6";
    // Without the circuit breaker: once only the never-answered users are
    // left, every call fails, which the breaker reads as the endpoint being
    // down and holds them (their attempts kept) instead of running them out.
    let mut cluster = Cluster::new(&[
        ("WDS_WEBHOOK_URL", &url),
        ("WDS_MAX_ATTEMPTS", "2"),
        ("WDS_DETAIL_LIMIT", "5"),
        ("WDS_NO_CIRCUIT", "true"),
    ]);
    cluster.start("initiator", &[]);
    cluster.start("worker", &[]);
    cluster.drop_file("users.csv", &users_csv(60));
    let job = cluster.wait_done(1, Duration::from_secs(180)).remove(0);
    let counts = |job: &serde_json::Value| {
        ["delivered", "dead", "permanent", "exhausted", "in_doubt"].map(|f| count(job, f))
    };
    assert_eq!(
        counts(&job),
        [20, 40, 20, 20, 0],
        "(delivered, dead, permanent, exhausted, in_doubt) in /jobs: {job}"
    );

    let id = job["job"].as_str().expect("a job id");
    let (status, body) = http_get(&cluster.api, &format!("/jobs/{id}")).expect("/jobs/{id}");
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(counts(&detail), [20, 40, 20, 20, 0], "/jobs/{id}: {body}");
    let letters = detail["dead_letters"].as_array().expect("dead letters");
    assert_eq!(letters.len(), 40, "{body}");
    let kept = letters
        .iter()
        .filter(|d| d["reason"]["detail"] != wds_core::backend::DETAIL_NOT_KEPT)
        .count();
    assert_eq!(kept, 5, "dead letters kept in detail (limit 5): {body}");
    assert!(
        !body.contains("SEKRIT"),
        "a stored reason shows a secret: {body}"
    );
    for service in &cluster.services {
        let log = service.log_text();
        assert!(
            !log.contains("SEKRIT"),
            "{} logged a secret:\n{log}",
            service.name
        );
    }
}
