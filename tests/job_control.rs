//! Job control over the control API, on real processes: `full_system all`
//! on its default backend (SQLite) and an initiator and a worker on Redis.
//! Pause stops deliveries (the receiver's count stops rising), resume
//! continues them, cancel ends the job `cancelled` with
//! `delivered + dead + invalid + duplicate + cancelled == lines` and no
//! user alerted twice, a replay by reason replays that reason only, and a
//! resend reads a finished job's archived file again as a second job.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use wds_harness::http::{http_get, http_post};
use wds_harness::ports::ANY_PORT;
use wds_harness::process::{poll_until, Service};
use wds_harness::receiver::{Reply, TestReceiver};
use wds_harness::users_csv;
use wds_redis::RedisServer;

/// Lines of the file that is paused, resumed and cancelled: at 300
/// deliveries a second it takes 10 s, time enough to act on it midway.
const LINES: usize = 3_000;

/// One deployment's processes, its inbox and its control API.
struct Deployment {
    api: String,
    inbox: PathBuf,
    services: Vec<Service>,
    _redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

/// The settings every process gets: deliveries to `receiver` at 300 a
/// second in batches of 20, so a pause takes effect within a batch or two.
fn env(receiver: &TestReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("WDS_WEBHOOK_URL", receiver.url()),
        ("WDS_RATE", "300".into()),
        ("WDS_BURST", "10".into()),
        ("WDS_BATCH_SIZE", "20".into()),
        ("WDS_CONCURRENCY", "8".into()),
        ("WDS_SETTLE_MS", "200".into()),
        ("WDS_API_LISTEN", ANY_PORT.into()),
        ("WDS_NOTIFIER_LISTEN", ANY_PORT.into()),
    ]
}

impl Deployment {
    /// `full_system all` on SQLite, its default backend.
    fn sqlite(receiver: &TestReceiver) -> Deployment {
        let dir = tempfile::tempdir().expect("temporary folder");
        let env = env(receiver);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut all = Service::start("all", dir.path(), &["all"], &env);
        let running = all.wait_for_line("WDS running", Duration::from_secs(120));
        let api = running
            .split("control API http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no control API address in {running:?}"))
            .to_string();
        Deployment {
            api,
            inbox: dir.path().join("wds-data/inbox"),
            services: vec![all],
            _redis: None,
            _dir: dir,
        }
    }

    /// An initiator and a worker on a Redis of their own.
    fn redis(receiver: &TestReceiver) -> Deployment {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut env = env(receiver);
        env.push(("WDS_REDIS_URL", redis.url()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut initiator = Service::start("initiator", dir.path(), &["initiator"], &env);
        let api = initiator.address("initiator running", "api");
        let worker = Service::start("worker", dir.path(), &["worker"], &env);
        Deployment {
            api,
            inbox: dir.path().join("wds-data/inbox"),
            services: vec![initiator, worker],
            _redis: Some(redis),
            _dir: dir,
        }
    }

    fn logs(&self) -> String {
        self.services
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.name, s.log_text()))
            .collect()
    }

    /// Polls `f` until it answers, failing with the logs after `timeout`.
    fn eventually<T>(&self, what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
        poll_until(timeout, f).unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.logs()
            )
        })
    }

    /// Renames a file into the inbox once it exists; returns the job.
    fn drop_file(&self, name: &str, body: &[u8]) -> Value {
        self.eventually("the inbox", Duration::from_secs(60), || {
            self.inbox.exists().then_some(())
        });
        let staging = self.inbox.with_file_name(format!("staging-{name}"));
        std::fs::write(&staging, body).expect("write the file");
        std::fs::rename(&staging, self.inbox.join(name)).expect("rename it into the inbox");
        self.eventually("its job", Duration::from_secs(60), || {
            let (200, body) = http_get(&self.api, "/jobs")? else {
                return None;
            };
            let jobs: Vec<Value> = serde_json::from_str(&body).ok()?;
            jobs.into_iter().find(|j| j["meta"]["name"] == name)
        })
    }

    fn job(&self, id: &str) -> Value {
        self.eventually("GET /jobs/{id}", Duration::from_secs(10), || {
            let (200, body) = http_get(&self.api, &format!("/jobs/{id}"))? else {
                return None;
            };
            serde_json::from_str(&body).ok()
        })
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, body) = self.eventually(path, Duration::from_secs(10), || {
            http_post(&self.api, path, body)
        });
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path} answered {status} with no JSON ({e}): {body}"));
        (status, json)
    }

    /// The receiver's count once it has stopped rising for `quiet`.
    fn settled_count(&self, receiver: &TestReceiver, quiet: Duration) -> usize {
        let mut last = (receiver.count(), Instant::now());
        self.eventually("deliveries to stop", Duration::from_secs(30), || {
            let now = receiver.count();
            if now != last.0 {
                last = (now, Instant::now());
            }
            (last.1.elapsed() >= quiet).then_some(now)
        })
    }
}

fn count(job: &Value, field: &str) -> u64 {
    job[field]
        .as_u64()
        .unwrap_or_else(|| panic!("job has no {field}: {job}"))
}

/// Pause, resume, cancel on a job that is delivering.
fn pause_resume_cancel(d: &Deployment, receiver: &TestReceiver) {
    let job = d.drop_file("big.csv", &users_csv(LINES));
    let id = job["job"].as_str().expect("job id").to_string();
    d.eventually("deliveries to start", Duration::from_secs(60), || {
        (receiver.count() >= 200).then_some(())
    });

    let (status, paused) = d.post(&format!("/jobs/{id}/pause"), "");
    assert_eq!(
        (status, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    // Batches on the wire finish; then nothing more arrives.
    let stopped = d.settled_count(receiver, Duration::from_millis(1500));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.count(), stopped, "deliveries went on while paused");
    assert!(
        stopped < LINES,
        "the job finished before the pause took effect"
    );
    assert_eq!(d.job(&id)["state"], "paused");

    let (status, resumed) = d.post(&format!("/jobs/{id}/resume"), "");
    assert_eq!(status, 200, "{resumed}");
    d.eventually(
        "deliveries to go on after resume",
        Duration::from_secs(30),
        || (receiver.count() > stopped + 100).then_some(()),
    );

    let (status, cancelled) = d.post(&format!("/jobs/{id}/cancel"), "");
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    let done = d.eventually("every line accounted for", Duration::from_secs(60), || {
        let job = d.job(&id);
        let accounted = ["delivered", "dead", "invalid", "duplicate", "cancelled"]
            .iter()
            .map(|f| count(&job, f))
            .sum::<u64>();
        (accounted == count(&job, "lines")).then_some(job)
    });
    assert_eq!(done["state"], "cancelled");
    assert!(
        count(&done, "cancelled") > 0,
        "nothing was cancelled: {done}"
    );
    assert!(
        done["finished_ms"].is_u64(),
        "a finished job has its finish time"
    );
    // Nothing goes out after the cancel settles, and nobody twice.
    let after = d.settled_count(receiver, Duration::from_millis(1500));
    assert_eq!(
        after as u64,
        count(&done, "delivered"),
        "receiver vs delivered"
    );
    assert!(
        receiver.per_id().values().all(|n| *n == 1),
        "a user alerted twice"
    );

    let (status, refused) = d.post(&format!("/jobs/{id}/resume"), "");
    assert_eq!(status, 409, "resume of a cancelled job: {refused}");
    assert!(refused["error"].is_string());
}

/// A replay by reason replays only the dead letters of that reason.
fn replay_by_reason(d: &Deployment, receiver: &TestReceiver) {
    receiver.set_script(|r| {
        if r.user.ends_with('7') {
            Reply::Status(410)
        } else {
            Reply::Ok
        }
    });
    let job = d.drop_file("gone.csv", &users_csv(100));
    let id = job["job"].as_str().expect("job id").to_string();
    let done = d.eventually("the job to be done", Duration::from_secs(60), || {
        let job = d.job(&id);
        (job["state"] == "done").then_some(job)
    });
    assert_eq!(count(&done, "dead"), 10, "{done}");
    let (status, none) = d.post(&format!("/jobs/{id}/replay"), r#"{"reason":"exhausted"}"#);
    assert_eq!(
        (status, none["replayed"].as_u64()),
        (200, Some(0)),
        "{none}"
    );
    assert_eq!(
        count(&d.job(&id), "dead"),
        10,
        "exhausted replay left the permanent ones"
    );
    receiver.set_script(|_| Reply::Ok);
    let (status, replayed) = d.post(&format!("/jobs/{id}/replay"), r#"{"reason":"permanent"}"#);
    assert_eq!(
        (status, replayed["replayed"].as_u64()),
        (200, Some(10)),
        "{replayed}"
    );
    let again = d.eventually(
        "the replayed lines delivered",
        Duration::from_secs(60),
        || {
            let job = d.job(&id);
            (job["state"] == "done" && count(&job, "delivered") == 100).then_some(job)
        },
    );
    assert_eq!(count(&again, "dead"), 0);
}

/// A resend reads the archived file again as a second job, with new ids.
fn resend_makes_a_second_job(d: &Deployment, receiver: &TestReceiver) {
    let job = d.drop_file("again.csv", &users_csv(50));
    let id = job["job"].as_str().expect("job id").to_string();
    d.eventually("the job to be done", Duration::from_secs(60), || {
        (d.job(&id)["state"] == "done").then_some(())
    });
    let before = receiver.count();
    let (status, resent) = d.eventually("the file to be archived", Duration::from_secs(30), || {
        let (status, json) = d.post(&format!("/jobs/{id}/resend"), "");
        (status != 409).then_some((status, json))
    });
    assert_eq!(status, 202, "{resent}");
    let new = resent["job"]
        .as_str()
        .expect("the new job's id")
        .to_string();
    assert_ne!(new, id, "a resend is a new job");
    let second = d.eventually("the resent job to be done", Duration::from_secs(60), || {
        let job = d.job(&new);
        (job["state"] == "done").then_some(job)
    });
    assert_eq!(count(&second, "delivered"), 50, "{second}");
    assert!(second["meta"]["name"]
        .as_str()
        .is_some_and(|n| n.contains("resend 1")));
    assert_eq!(receiver.count(), before + 50, "the resent job's 50 calls");
    let per_id = receiver.per_id();
    let of = |job: &str| {
        per_id
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{job}:")))
            .map(|(_, n)| *n)
            .collect::<Vec<u32>>()
    };
    assert_eq!(of(&new).len(), 50, "the resent job's own webhook-ids");
    assert!(
        of(&new).iter().chain(&of(&id)).all(|n| *n == 1),
        "an id sent twice"
    );
    // The original is unchanged, and dropping the file again is no new job.
    assert_eq!(count(&d.job(&id), "delivered"), 50);
    let (status, json) = d.post("/jobs/ffffffffffffffff/resend", "");
    assert_eq!(status, 404, "{json}");
}

#[test]
fn job_control_on_the_default_backend() {
    let receiver = TestReceiver::start();
    let d = Deployment::sqlite(&receiver);
    pause_resume_cancel(&d, &receiver);
    replay_by_reason(&d, &receiver);
    resend_makes_a_second_job(&d, &receiver);
}

#[test]
fn job_control_on_redis() {
    let receiver = TestReceiver::start();
    let d = Deployment::redis(&receiver);
    pause_resume_cancel(&d, &receiver);
    replay_by_reason(&d, &receiver);
    resend_makes_a_second_job(&d, &receiver);
}
