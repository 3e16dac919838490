//! Names and notices, against the real `full_system all`: an upload keeps
//! its client's file name as the job's name (fit for display), the
//! initiator logs a line when a job finishes, the completion webhook
//! (`--on-job-done`) posts the signed report once per job, a restart
//! included, and logs written to a file carry no colour codes.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use wds_harness::cluster::count;
use wds_harness::http::{http_get, http_upload};
use wds_harness::ports::ANY_PORT;
use wds_harness::process::{field_value, Service, TEST_SECRET};
use wds_harness::receiver::{Hit, Reply, TestReceiver};
use wds_http::signature::{verify, Secret};

/// `all` in `dir` on the default (SQLite) backend, with the test secret.
fn start_all(name: &str, dir: &Path, env: &[(&str, &str)]) -> (Service, String) {
    let mut all_env = vec![
        ("WDS_API_LISTEN", ANY_PORT),
        ("WDS_NOTIFIER_LISTEN", ANY_PORT),
        ("WDS_SECRETS", TEST_SECRET),
        ("WDS_SETTLE_MS", "200"),
    ];
    all_env.extend_from_slice(env);
    let mut all = Service::start(name, dir, &["all"], &all_env);
    let api = all.address("initiator running", "api");
    (all, api)
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`.
fn eventually<T>(what: &str, service: &Service, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}:\n{}",
            service.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every job, once the control API answers.
fn jobs(api: &str) -> Option<Vec<Value>> {
    let (status, body) = http_get(api, "/jobs")?;
    (status == 200).then_some(())?;
    serde_json::from_str::<Value>(&body)
        .ok()?
        .as_array()
        .cloned()
}

/// Writes `body` next to the inbox and renames it in.
fn drop_file(dir: &Path, name: &str, body: &[u8]) {
    let inbox = dir.join("wds-data/inbox");
    let staging = dir.join(format!("staging-{name}"));
    std::fs::write(&staging, body).unwrap();
    std::fs::rename(&staging, inbox.join(name)).unwrap();
}

#[test]
fn an_upload_keeps_its_client_file_name_as_the_job_name_fit_for_display() {
    let dir = tempfile::tempdir().unwrap();
    let (all, api) = start_all("upload-name", dir.path(), &[]);
    // A path, a tab and a bidi override in the client's name (an HTTP
    // header cannot carry other control characters).
    let (status, body) = http_upload(
        &api,
        "C:\\fakepath\\Q3 \tusers\u{202E}.csv".as_bytes(),
        b"user-1,hi\nuser-2,hi\nuser-3\n",
    )
    .expect("the upload is answered");
    assert_eq!(status, 202, "{body}");
    let job = eventually("the uploaded job to finish", &all, || {
        jobs(&api)?.into_iter().find(|j| j["state"] == "done")
    });
    assert_eq!(
        job["meta"]["name"], "Q3 users.csv",
        "the job's name is the client's file name, without its path and control characters: {job}"
    );
    let file = job["meta"]["file"].as_str().unwrap_or_default();
    assert!(
        file.starts_with("upload-") && file.ends_with(".csv"),
        "the file in the inbox keeps a name of WDS's own: {job}"
    );
    // Read as the CSV it is, under its own name (the third line is invalid:
    // no message, no default).
    assert_eq!(
        ["lines", "delivered", "invalid"].map(|f| count(&job, f)),
        [3, 2, 1],
        "{job}"
    );
    // The note beside the file goes with it, once the file is archived.
    let inbox = dir.path().join("wds-data/inbox");
    eventually("the inbox to be empty", &all, || {
        let left: Vec<_> = std::fs::read_dir(&inbox).ok()?.collect();
        left.is_empty().then_some(())
    });
}

#[test]
fn a_finished_job_is_logged_with_its_counts_without_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut all, _api) = start_all("finished-log", dir.path(), &[]);
    drop_file(
        dir.path(),
        "users.csv",
        b"user-1,hi\nuser-2,hi\nuser-1,hi\n\"unterminated\n",
    );
    let line = all.wait_for_line("job finished", Duration::from_secs(120));
    let field = |name: &str| field_value(&line, name);
    assert_eq!(field("name").as_deref(), Some("users.csv"), "{line}");
    assert_eq!(
        ["lines", "delivered", "dead", "invalid", "duplicate"].map(&field),
        ["4", "2", "0", "1", "1"].map(|v| Some(v.to_string())),
        "{line}"
    );
    assert_eq!(field("state").as_deref(), Some("Done"), "{line}");
    let log = all.log_text();
    assert_eq!(
        log.matches("job finished").count(),
        1,
        "one line per job:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a file has colour codes:\n{log}"
    );
}

/// The completion notices `receiver` got for `job`.
fn notices_of<'a>(hits: &'a [Hit], job: &str) -> Vec<&'a Hit> {
    let id = format!("{job}:done");
    hits.iter().filter(|h| h.id == id).collect()
}

#[test]
fn the_completion_webhook_posts_the_signed_report_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Failing at first: the notice is pending when the initiator is killed.
    let receiver = TestReceiver::with_script(|_| Reply::Status(503));
    let hook = receiver.url();
    let env = [("WDS_ON_JOB_DONE", hook.as_str())];
    let (mut first, api) = start_all("hook-1", dir.path(), &env);
    drop_file(dir.path(), "first.csv", b"user-1,hi\nuser-2,hi\n");
    let job = eventually("the first job to finish", &first, || {
        jobs(&api)?.into_iter().find(|j| j["state"] == "done")
    });
    let id = job["job"].as_str().unwrap().to_string();
    eventually("a failed notice attempt", &first, || {
        (!notices_of(&receiver.hits(), &id).is_empty()).then_some(())
    });
    first.kill_9();

    // Healthy now: the restarted initiator sends the pending notice.
    receiver.set_script(|_| Reply::Ok);
    let (mut second, _) = start_all("hook-2", dir.path(), &env);
    let hits = eventually("the pending notice to be delivered", &second, || {
        let hits = receiver.hits();
        notices_of(&hits, &id)
            .iter()
            .any(|h| h.reply == Reply::Ok)
            .then_some(hits)
    });
    let sent = notices_of(&hits, &id)
        .into_iter()
        .find(|h| h.reply == Reply::Ok)
        .unwrap()
        .clone();
    let report: Value = serde_json::from_slice(&sent.body).expect("a JSON report");
    assert_eq!(report["job"], id.as_str(), "{report}");
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(
        ["lines", "delivered"].map(|f| count(&report, f)),
        [2, 2],
        "{report}"
    );
    let secret = Secret::parse(TEST_SECRET).unwrap();
    let (timestamp, signature) = &sent.signed;
    verify(
        &[secret],
        &sent.id,
        timestamp,
        signature,
        &sent.body,
        Duration::from_secs(300),
        std::time::SystemTime::now(),
    )
    .expect("the notice is signed like a delivery");
    second.signal("TERM");
    assert!(second.wait(Duration::from_secs(30)).is_some());

    // Once per job: after another restart only the new job's notice comes.
    let (third, api) = start_all("hook-3", dir.path(), &env);
    drop_file(dir.path(), "second.csv", b"user-3,hi\n");
    let second_job = eventually("a second job to finish", &third, || {
        jobs(&api)?
            .into_iter()
            .find(|j| j["state"] == "done" && j["job"] != id.as_str())
    });
    let second_id = second_job["job"].as_str().unwrap().to_string();
    let hits = eventually("the second job's notice", &third, || {
        let hits = receiver.hits();
        (!notices_of(&hits, &second_id).is_empty()).then_some(hits)
    });
    let delivered_first = notices_of(&hits, &id)
        .iter()
        .filter(|h| h.reply == Reply::Ok)
        .count();
    assert_eq!(
        delivered_first, 1,
        "the first job's notice was delivered again after a restart"
    );
}
