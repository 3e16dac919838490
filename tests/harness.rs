//! The process harness itself: what every process test relies on.

use std::time::Duration;

use wds_harness::http::http_get;
use wds_harness::ports::ANY_PORT;
use wds_harness::process::{Service, TEST_SECRET};

/// A `WDS_*` variable in the shell that runs the tests must not reach the
/// services: a bad one here would make every child fail at start.
#[test]
fn children_do_not_inherit_wds_settings_and_bind_port_zero() {
    // One test in this binary, so changing the environment races nothing.
    std::env::set_var("WDS_MODE", "twice");
    std::env::set_var("WDS_NOTIFIER_LISTEN", "256.0.0.1:1");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WDS_NOTIFIER_LISTEN", ANY_PORT),
        ("WDS_SECRETS", TEST_SECRET),
    ];
    let mut first = Service::start("notifier-a", dir.path(), &["notifier"], &env);
    let mut second = Service::start("notifier-b", dir.path(), &["notifier"], &env);
    let a = first.address("notifier listening", "addr");
    let b = second.address("notifier listening", "addr");
    assert_ne!(a, b, "two services got one port");
    for addr in [&a, &b] {
        let (status, _) = http_get(addr, "/webhook").expect("the notifier answers");
        assert_eq!(status, 405, "GET /webhook at {addr}");
    }
    first.signal("TERM");
    let status = first
        .wait(Duration::from_secs(30))
        .expect("the notifier stops on SIGTERM");
    assert!(status.success(), "{status}:\n{}", first.log_text());
    second.kill_9();
}
