//! The status page (`GET /` of the control API) in a real headless
//! Chromium: `full_system all` delivers under a rate limit while the page,
//! driven by `tests/browser/status_page.cjs` (playwright-core), watches.
//!
//! The browser is the system's (`/usr/bin/chromium`, installed by
//! `scripts/test` through apt when missing) and playwright-core the pinned
//! one `scripts/test` installs into `target/browser`. Either missing fails
//! the test with what to run: it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use wds_core::{Input, JobId};
use wds_harness::ports::ANY_PORT;
use wds_harness::process::Service;
use wds_harness::receiver::TestReceiver;
use wds_harness::users_csv;

const TOKEN: &str = "status-page-test-token";

/// Where the system's Chromium is.
fn chromium() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("WDS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        path.exists(),
        "no Chromium at {}: run ./scripts/test (it installs the system's `chromium` package), or `apt-get install chromium`",
        path.display()
    );
    path
}

/// The node_modules holding the pinned playwright-core.
fn node_modules() -> PathBuf {
    let path = std::env::var_os("WDS_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/browser/node_modules"));
    assert!(
        path.join("playwright-core").is_dir(),
        "no playwright-core in {}: run ./scripts/test (it runs `npm ci` of tests/browser into target/browser)",
        path.display()
    );
    path
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `full_system all` with a token and a shared rate, delivering to a receiver.
/// Fields drop in order: the process is killed before its folder goes.
struct Deployment {
    service: Service,
    _receiver: TestReceiver,
    dir: tempfile::TempDir,
    api: String,
}

impl Deployment {
    fn start(rate: &str) -> Deployment {
        let receiver = TestReceiver::start();
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut service = Service::start(
            "all",
            dir.path(),
            &[
                "all",
                "--api-listen",
                ANY_PORT,
                "--notifier-listen",
                ANY_PORT,
            ],
            &[
                ("WDS_WEBHOOK_URL", &receiver.url()),
                ("WDS_SETTLE_MS", "200"),
                ("WDS_TOKEN", TOKEN),
                ("WDS_RATE", rate),
            ],
        );
        let api = format!("http://{}", service.address("initiator running", "api"));
        Deployment {
            service,
            _receiver: receiver,
            dir,
            api,
        }
    }

    /// Renames a complete file into the inbox; returns its job id.
    fn drop_file(&self, name: &str, body: &[u8]) -> String {
        let inbox = self.dir.path().join("wds-data/inbox");
        std::fs::create_dir_all(&inbox).expect("inbox");
        let temp = inbox.join(".dropping.part");
        std::fs::write(&temp, body).expect("write the file");
        std::fs::rename(&temp, inbox.join(name)).expect("rename into the inbox");
        let identity = Input::from_bytes(name, body.to_vec()).identity;
        JobId::from_identity(&identity).to_string()
    }

    /// Runs a scenario of the driver script; returns what it printed.
    fn browse(&mut self, scenario: &str, env: &[(&str, &str)]) -> Value {
        let script = workspace().join("tests/browser/status_page.cjs");
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .arg(scenario)
            .env("WDS_API", &self.api)
            .env("WDS_TOKEN", TOKEN)
            .env("WDS_CHROMIUM", chromium())
            .env("WDS_NODE_MODULES", node_modules());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .output()
            .expect("cannot run node (install Node.js 20 or later)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the browser test failed: {}\n{stdout}\nservice log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.service.log_text()
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

fn number(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// A job's counts rise on the open page while it delivers; data is shown
/// as text (a hostile file name stays a name), rejected lines with their
/// reasons, an upload through the form becomes a job, a user's receipt is
/// looked up, times are clock times. The screenshot goes to the target
/// dir, or with `WDS_UPDATE_SCREENSHOT=1` to docs/status-page.png (the
/// README shows it), so a test run leaves the work tree as it was.
#[test]
fn status_page_shows_a_job_delivering_live() {
    let _ = (chromium(), node_modules());
    // 3,000 users at 150/s: about 20 s of delivery to watch.
    let mut d = Deployment::start("150");
    let mut slow = users_csv(3_000);
    slow.extend_from_slice(b",no user id here\n<script>alert(1)</script>\n");
    let slow_job = d.drop_file("alerts-monday.csv", &slow);
    // No slash: a file name cannot hold one.
    let hostile_name = "<b>bold<b> &amp; <img src=x onerror=alert(1)>.csv";
    let hostile_job = d.drop_file(hostile_name, b"h-1,hi\nh-2,hi\n");
    let screenshot = if std::env::var_os("WDS_UPDATE_SCREENSHOT").is_some() {
        workspace().join("docs/status-page.png")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png")
    };
    let _ = std::fs::remove_file(&screenshot);
    let seen = d.browse(
        "watch",
        &[
            ("WDS_SLOW_JOB", &slow_job),
            ("WDS_HOSTILE_JOB", &hostile_job),
            ("WDS_SCREENSHOT", screenshot.to_str().expect("UTF-8 path")),
        ],
    );
    assert_eq!(number(&seen, "lines"), 3_002, "{seen}");
    let (first, later) = (number(&seen, "first"), number(&seen, "later"));
    assert!(0 < first && first < later, "the count did not rise: {seen}");
    assert!(
        later < 3_000,
        "the page saw the job only once it was nearly done: {seen}"
    );
    assert_eq!(seen["shownName"], hostile_name, "{seen}");
    assert_eq!(number(&seen, "injected"), 0, "data became markup: {seen}");
    let rejects = seen["rejects"].as_array().expect("rejects");
    assert_eq!(rejects.len(), 2, "{seen}");
    for (row, line) in rejects.iter().zip(["3001", "3002"]) {
        assert!(row.as_str().is_some_and(|r| r.starts_with(line)), "{seen}");
    }
    let started = seen["started"].as_str().expect("started");
    assert!(
        started.len() >= 19 && started.as_bytes()[4] == b'-' && started.as_bytes()[13] == b':',
        "not a clock time: {started}"
    );
    assert!(
        seen["rate"].as_str().is_some_and(|r| r.ends_with("/s")),
        "{seen}"
    );
    assert!(!seen["ready"].as_str().unwrap_or("").is_empty(), "{seen}");
    assert_eq!(seen["uploaded"].as_str().map(str::len), Some(16), "{seen}");
    let lookup = seen["lookup"].as_array().expect("lookup");
    assert_eq!(lookup[0], "user-1 got it", "{seen}");
    assert!(
        lookup[1]
            .as_str()
            .is_some_and(|l| l.starts_with("line 1: delivered (HTTP 200, attempt 1")),
        "{seen}"
    );
    // The Workers table lists the `all` process's own worker, live.
    let workers = seen["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "one worker in `all`: {seen}");
    let worker = &workers[0];
    let pid = d.service.pid();
    assert_eq!(worker["state"], "live", "{seen}");
    assert!(
        worker["process"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!(":{pid}"))),
        "host:pid of the `all` process ({pid}): {seen}"
    );
    assert!(
        worker["worker"]
            .as_str()
            .is_some_and(|w| w.ends_with(&format!("-{pid}"))),
        "the default worker id is host-pid: {seen}"
    );
    assert!(number(worker, "delivered") > 0, "{seen}");
    assert!(
        worker["seen"].as_str().is_some_and(|s| s.ends_with(" ago")),
        "{seen}"
    );
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "script errors: {seen}"
    );
    assert!(screenshot.exists());
}

/// Pause stops a job's delivered count, resume starts it again, cancel
/// shows another job's `cancelled` count: through the page's buttons.
#[test]
fn status_page_pauses_resumes_and_cancels() {
    let _ = (chromium(), node_modules());
    let mut d = Deployment::start("100");
    let a = d.drop_file("job-a.csv", &users_csv(4_000));
    // B must still be delivering when it is cancelled: while A is paused
    // it has the whole rate.
    let mut b_body = users_csv(30_000);
    b_body.extend_from_slice(b"extra-user,for a distinct identity\n");
    let b = d.drop_file("job-b.csv", &b_body);
    let seen = d.browse("control", &[("WDS_JOB_A", &a), ("WDS_JOB_B", &b)]);
    assert_eq!(
        number(&seen, "held"),
        number(&seen, "whilePaused"),
        "{seen}"
    );
    assert!(number(&seen, "resumed") > number(&seen, "held"), "{seen}");
    assert!(number(&seen, "cancelled") > 0, "{seen}");
    assert!(
        seen["stateB"]
            .as_str()
            .is_some_and(|s| s.starts_with("cancelled")),
        "{seen}"
    );
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "script errors: {seen}"
    );
}
