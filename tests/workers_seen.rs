//! "Workers seen" on real processes: each worker beats its counters into
//! the backend and the initiator's `GET /workers` lists them.
//!
//! On Redis, two `full_system worker` processes deliver one job; the
//! initiator's API lists both live with their counts adding up to the
//! job's delivered count, and a worker killed with SIGKILL is listed gone
//! within a few beats while the other stays live. On SQLite, `full_system
//! all` lists its own worker.

use std::time::Duration;

use serde_json::Value;
use wds_harness::cluster::{count, Cluster};
use wds_harness::http::http_get;
use wds_harness::ports::ANY_PORT;
use wds_harness::process::{poll_until, Service};
use wds_harness::receiver::TestReceiver;
use wds_harness::users_csv;

/// This machine's name as the workers read it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read the host name")
        .trim()
        .to_string()
}

/// `GET /workers` at `api`, by worker id (`None` while it does not answer 200).
fn workers(api: &str) -> Option<Vec<Value>> {
    match http_get(api, "/workers")? {
        (200, body) => serde_json::from_str::<Value>(&body).ok()?["workers"]
            .as_array()
            .cloned(),
        _ => None,
    }
}

fn find<'a>(workers: &'a [Value], id: &str) -> Option<&'a Value> {
    workers.iter().find(|w| w["worker"] == id)
}

#[test]
fn redis_workers_are_listed_live_and_a_killed_one_goes() {
    let receiver = TestReceiver::start();
    // 3,000 lines at 300/s shared by both workers (the Redis limiter), in
    // batches of 20: ten seconds in which both lease batches.
    let mut cluster = Cluster::new(&[
        ("WDS_WEBHOOK_URL", &receiver.url()),
        ("WDS_RATE", "300"),
        ("WDS_BURST", "10"),
        ("WDS_BATCH_SIZE", "20"),
        ("WDS_CONCURRENCY", "4"),
    ]);
    cluster.start("initiator", &[]);
    let named = cluster.start("worker", &[("WDS_WORKER_NAME", "worker-a")]);
    let unnamed = cluster.start("worker", &[]);
    for i in [named, unnamed] {
        cluster.services[i].wait_for_line("worker running", Duration::from_secs(120));
    }
    let default_id = format!("{}-{}", hostname(), cluster.services[unnamed].pid());
    cluster.drop_file("users.csv", &users_csv(3_000));
    let jobs = cluster.wait_done(1, Duration::from_secs(120));
    let delivered = count(&jobs[0], "delivered");
    assert_eq!(delivered, 3_000, "{jobs:?}");

    // The beats after the job count every delivery: one per worker, each
    // worker's share adding up to the job's count.
    let listed = cluster.eventually(
        "both workers listed live, their counts adding up to the job's",
        Duration::from_secs(30),
        || {
            let all = workers(&cluster.api)?;
            let (a, b) = (find(&all, "worker-a")?, find(&all, &default_id)?);
            let sum = count(a, "delivered") + count(b, "delivered");
            (all.len() == 2 && a["live"] == true && b["live"] == true && sum == delivered)
                .then_some(all)
        },
    );
    for (id, index) in [("worker-a", named), (default_id.as_str(), unnamed)] {
        let w = find(&listed, id).expect("listed");
        assert!(
            count(w, "delivered") > 0,
            "both workers delivered: {listed:?}"
        );
        assert_eq!(
            count(w, "pid"),
            u64::from(cluster.services[index].pid()),
            "{w}"
        );
        assert_eq!(w["host"], hostname(), "{w}");
        assert_eq!(count(w, "concurrency_limit"), 4, "{w}");
        assert_eq!(count(w, "in_flight"), 0, "nothing left to deliver: {w}");
        assert!(count(w, "seen_ms") >= count(w, "started_ms"), "{w}");
    }

    // SIGKILL: no last beat. Within a few beat intervals it is gone; the
    // other, still beating, stays live.
    cluster.services[named].kill_9();
    let after = cluster.eventually(
        "the killed worker to be listed gone",
        Duration::from_secs(30),
        || {
            let all = workers(&cluster.api)?;
            (find(&all, "worker-a")?["live"] == false).then_some(all)
        },
    );
    let other = find(&after, &default_id).expect("the other worker is still listed");
    assert_eq!(other["live"], true, "{after:?}");
    assert_eq!(
        find(&after, "worker-a").expect("listed")["rate_per_s"],
        0.0,
        "{after:?}"
    );
    let (_, metrics) = http_get(&cluster.api, "/metrics").expect("metrics");
    assert!(
        metrics.contains("wds_workers{state=\"live\"} 1")
            && metrics.contains("wds_workers{state=\"gone\"} 1"),
        "{metrics}"
    );
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
}

#[test]
fn all_on_sqlite_lists_its_own_worker() {
    let receiver = TestReceiver::start();
    let dir = tempfile::tempdir().expect("temporary folder");
    let url = receiver.url();
    let mut all = Service::start(
        "all",
        dir.path(),
        &["all"],
        &[
            ("WDS_WEBHOOK_URL", url.as_str()),
            ("WDS_SETTLE_MS", "200"),
            ("WDS_API_LISTEN", ANY_PORT),
            ("WDS_NOTIFIER_LISTEN", ANY_PORT),
        ],
    );
    let api = all.address("initiator running", "api");
    let inbox = dir.path().join("wds-data/inbox");
    poll_until(Duration::from_secs(60), || inbox.exists().then_some(()))
        .expect("the inbox to be created");
    let staging = dir.path().join("staging.csv");
    std::fs::write(&staging, users_csv(200)).expect("write the file");
    std::fs::rename(&staging, inbox.join("users.csv")).expect("rename it into the inbox");

    let id = format!("{}-{}", hostname(), all.pid());
    let listed = poll_until(Duration::from_secs(60), || {
        let all = workers(&api)?;
        let me = find(&all, &id)?;
        (all.len() == 1 && me["live"] == true && count(me, "delivered") == 200).then_some(all)
    })
    .unwrap_or_else(|| {
        panic!(
            "`all` did not list itself with its 200 deliveries: {:?}\n{}",
            workers(&api),
            all.log_text()
        )
    });
    assert_eq!(count(&listed[0], "pid"), u64::from(all.pid()));
    assert_eq!(receiver.count(), 200);
}
