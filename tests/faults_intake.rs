//! Issue 11: files that change, stall, vanish or point elsewhere after they
//! reach the inbox, against real `full_system` processes, checked at a
//! receiver that records repeats: no user alerted twice, every line
//! accounted for, and the terminal state and reason the intake rule says
//! (README "What happens to a file that changes").
//!
//! Most cases run twice (see [`in_both_modes`]): `redis_roles`, an
//! initiator and a worker on a Redis of their own, and `all_on_sqlite`, one
//! `all` process on its default backend (SQLite, no Redis at all).

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wds_harness::cluster::{count, Cluster};
use wds_harness::http::{http_get, http_upload};
use wds_harness::receiver::{Reply, TestReceiver};

/// Long enough for a debug build on a loaded 2-core machine; only a
/// failure waits this long.
const PATIENCE: Duration = Duration::from_secs(120);

/// How a case's deployment runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// An initiator and a worker, on a Redis of their own.
    Roles,
    /// One `all` process on its default backend, SQLite, with no Redis.
    All,
}

impl Mode {
    /// The deployment, not started yet.
    fn cluster(self, env: &[(&str, &str)]) -> Cluster {
        match self {
            Mode::Roles => Cluster::new(env),
            Mode::All => Cluster::local(env),
        }
    }

    /// Starts the deployment's processes; returns the index of the one
    /// that reads the inbox (the initiator, or `all`).
    fn start(self, cluster: &mut Cluster) -> usize {
        match self {
            Mode::Roles => {
                let initiator = cluster.start("initiator", &[]);
                cluster.start("worker", &[]);
                initiator
            }
            Mode::All => cluster.start("all", &[]),
        }
    }

    /// The role that reads the inbox.
    fn reader_role(self) -> &'static str {
        match self {
            Mode::Roles => "initiator",
            Mode::All => "all",
        }
    }
}

/// `name::redis_roles` and `name::all_on_sqlite`, each calling `body` with
/// its [`Mode`].
macro_rules! in_both_modes {
    ($($name:ident => $body:ident;)*) => {$(
        mod $name {
            #[test]
            fn redis_roles() {
                super::$body(super::Mode::Roles)
            }
            #[test]
            fn all_on_sqlite() {
                super::$body(super::Mode::All)
            }
        }
    )*};
}

in_both_modes! {
    a_file_that_grows_after_pickup_is_one_job_with_every_line_once => grows_after_pickup;
    a_stalled_writer_and_a_shell_append_loop_each_make_one_complete_job => stalled_writer_and_append_loop;
    files_changed_or_removed_while_read_fail_with_a_reason_and_go_to_rejected => changed_while_read;
    a_file_overwritten_part_way_through_its_read_fails_with_what_was_read_delivered_once => overwritten_mid_read;
    symlinks_and_fifos_are_never_read_and_do_not_block_shutdown => symlinks_and_fifos;
    an_inbox_that_cannot_be_listed_for_a_while_is_waited_for_and_reported => inbox_unlistable;
    an_archive_on_another_file_system_gets_every_finished_file => archive_elsewhere;
    a_job_whose_file_went_while_no_initiator_ran_is_failed_at_restart => gone_while_down;
}

/// `prefix-from` … `prefix-to`, one `user,message` line each.
fn lines(prefix: &str, from: u64, to: u64) -> String {
    (from..=to)
        .map(|i| format!("{prefix}-{i},intake test\n"))
        .collect()
}

/// Every job once reading ended (done or failed) and every line read is
/// accounted for; at least `jobs` of them.
fn wait_finished(cluster: &Cluster, jobs: usize) -> Vec<Value> {
    cluster.eventually("every job to finish", PATIENCE, || {
        let all = cluster.jobs()?;
        let finished = |j: &Value| {
            (j["state"] == "done" || j["state"] == "failed")
                && count(j, "delivered")
                    + count(j, "dead")
                    + count(j, "invalid")
                    + count(j, "duplicate")
                    == count(j, "lines")
        };
        (all.len() >= jobs && all.iter().all(finished)).then_some(all)
    })
}

/// Waits until a job for `name` exists; returns it.
fn wait_job(cluster: &Cluster, name: &str) -> Value {
    cluster.eventually(&format!("a job for {name}"), PATIENCE, || {
        cluster
            .jobs()?
            .into_iter()
            .find(|j| j["meta"]["name"] == name)
    })
}

fn named<'a>(jobs: &'a [Value], name: &str) -> Vec<&'a Value> {
    jobs.iter().filter(|j| j["meta"]["name"] == name).collect()
}

/// How many requests each user got that the receiver accepted (200; a
/// 429 or a 5xx is not an alert).
fn per_user(receiver: &TestReceiver) -> HashMap<String, u32> {
    receiver
        .hits()
        .into_iter()
        .filter(|h| h.reply == Reply::Ok)
        .fold(HashMap::new(), |mut m, h| {
            *m.entry(h.user).or_default() += 1;
            m
        })
}

/// Asserts the receiver got exactly the users `prefix-1..=n` once each,
/// for every `(prefix, n)`, and nobody else.
fn assert_each_user_once(receiver: &TestReceiver, expected: &[(&str, u64)]) {
    let users = per_user(receiver);
    let twice: Vec<_> = users.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "users alerted more than once: {twice:?}");
    let mut total = 0;
    for (prefix, n) in expected {
        total += n;
        for i in 1..=*n {
            let user = format!("{prefix}-{i}");
            assert!(users.contains_key(&user), "{user} was never alerted");
        }
    }
    assert_eq!(users.len() as u64, total, "unexpected users were alerted");
}

fn grows_after_pickup(mode: Mode) {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = mode.cluster(&[("WDS_WEBHOOK_URL", &url), ("WDS_SETTLE_MS", "500")]);
    mode.start(&mut cluster);
    let inbox = cluster.inbox();

    // Kept open: written, flushed, a pause longer than the settle time,
    // written again, closed.
    let mut open = std::fs::File::create(inbox.join("grow.csv")).unwrap();
    open.write_all(lines("grow", 1, 5_000).as_bytes()).unwrap();
    open.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    open.write_all(lines("grow", 5_001, 10_000).as_bytes())
        .unwrap();
    drop(open);

    // Dropped complete, then appended to once its job exists.
    cluster.drop_file("appended.csv", lines("app", 1, 20_000).as_bytes());
    wait_job(&cluster, "appended.csv");
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(inbox.join("appended.csv"))
        .unwrap();
    more.write_all(lines("app", 20_001, 21_000).as_bytes())
        .unwrap();
    drop(more);

    // Every appended line read, in one job or two (see below).
    let appended_lines = |jobs: &[Value]| -> u64 {
        jobs.iter()
            .filter(|j| {
                j["meta"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("appended"))
            })
            .map(|j| count(j, "lines"))
            .sum()
    };
    let jobs = cluster.eventually("every appended line to be read", PATIENCE, || {
        let jobs = wait_finished(&cluster, 2);
        (appended_lines(&jobs) >= 21_000).then_some(jobs)
    });
    let grow = named(&jobs, "grow.csv");
    assert_eq!(grow.len(), 1, "one job for the file kept open: {jobs:?}");
    assert_eq!(count(grow[0], "lines"), 10_000, "{}", grow[0]);
    assert_eq!(grow[0]["state"], "done", "{}", grow[0]);
    // The append continues the job, or (if it came after the job had read
    // to the end) makes a file of its own: `appended.appended-N.csv` when
    // it came before the file left the inbox, a new `appended.csv` after.
    // Never a repeat, never lost.
    let appended: Vec<&Value> = jobs
        .iter()
        .filter(|j| {
            j["meta"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("appended"))
        })
        .collect();
    let lines_read = appended_lines(&jobs);
    assert_eq!(lines_read, 21_000, "{appended:?}");
    assert!(
        appended.iter().all(|j| j["state"] == "done"),
        "{appended:?}"
    );
    assert_each_user_once(&receiver, &[("grow", 10_000), ("app", 21_000)]);
    eprintln!(
        "FIGURES grows after pickup ({mode:?}): grow.csv 1 job of 10000; appended.csv {} job(s) of {lines_read}",
        appended.len()
    );
}

fn stalled_writer_and_append_loop(mode: Mode) {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = mode.cluster(&[("WDS_WEBHOOK_URL", &url), ("WDS_SETTLE_MS", "1000")]);
    mode.start(&mut cluster);
    let inbox = cluster.inbox();

    let mut stalled = std::fs::File::create(inbox.join("stalled.csv")).unwrap();
    stalled
        .write_all(lines("stall", 1, 10_000).as_bytes())
        .unwrap();
    stalled.flush().unwrap();
    std::thread::sleep(Duration::from_millis(2_000));
    stalled
        .write_all(lines("stall", 10_001, 20_000).as_bytes())
        .unwrap();
    drop(stalled);

    let looped = inbox.join("loop.csv");
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"i=1; while [ $i -le 3000 ]; do echo "loop-$i,intake test" >> "$F"; i=$((i+1)); done"#)
        .env("F", &looped)
        .status()
        .unwrap();
    assert!(status.success());

    let jobs = wait_finished(&cluster, 2);
    for (name, total) in [("stalled.csv", 20_000), ("loop.csv", 3_000)] {
        let found = named(&jobs, name);
        assert_eq!(found.len(), 1, "{name}: one job, got {jobs:?}");
        assert_eq!(found[0]["state"], "done", "{}", found[0]);
        assert_eq!(count(found[0], "lines"), total, "{}", found[0]);
        assert_eq!(count(found[0], "delivered"), total, "{}", found[0]);
    }
    let done = cluster.path().join("wds-data/done");
    let archived = std::fs::read_to_string(done.join("stalled.csv")).unwrap();
    assert_eq!(
        archived.lines().count(),
        20_000,
        "the archive holds what was read"
    );
    assert_each_user_once(&receiver, &[("stall", 20_000), ("loop", 3_000)]);
    eprintln!("FIGURES stalled writer ({mode:?}): 1 job of 20000; echo >> loop: 1 job of 3000");
}

/// Writes `body` to `path` in place (create, write, close: handed over at
/// the close-after-write) and waits until its job has read every line and
/// is still `reading` (waiting at the end of the file for more).
fn write_and_wait(cluster: &Cluster, path: &Path, body: &str) -> Value {
    std::fs::write(path, body).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let lines = body.lines().count() as u64;
    cluster.eventually(&format!("{name} read to its end"), PATIENCE, || {
        let job = wait_job(cluster, name);
        (job["state"] == "reading" && count(&job, "lines") == lines).then_some(job)
    })
}

/// The names `GET /intake` lists as skipped.
fn skipped(cluster: &Cluster) -> Option<HashMap<String, String>> {
    let (status, body) = http_get(&cluster.api, "/intake")?;
    if status != 200 {
        return None;
    }
    let intake: Value = serde_json::from_str(&body).ok()?;
    Some(
        intake["skipped"]
            .as_array()?
            .iter()
            .filter_map(|s| Some((s["name"].as_str()?.into(), s["reason"].as_str()?.into())))
            .collect(),
    )
}

/// Waits until the process reading the inbox has listed it (it reports
/// `names` as skipped). A file written before that can be found by the
/// first listing rather than by its close, and then waits the settle time
/// and is handed over as complete, so its job does not follow it.
fn wait_listed(cluster: &Cluster, names: &[&str]) {
    cluster.eventually("the inbox to be listed", PATIENCE, || {
        let skipped = skipped(cluster)?;
        names.iter().all(|n| skipped.contains_key(*n)).then_some(())
    });
}

/// [`wait_listed`] on a folder made for it in the inbox.
fn wait_scanning(cluster: &Cluster) {
    std::fs::create_dir(cluster.inbox().join("probe.d")).unwrap();
    wait_listed(cluster, &["probe.d"]);
}

fn changed_while_read(mode: Mode) {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    // A long settle time: a file handed over at its close is followed for
    // 3 s of quiet, which is when each change below lands.
    let mut cluster = mode.cluster(&[("WDS_WEBHOOK_URL", &url), ("WDS_SETTLE_MS", "3000")]);
    mode.start(&mut cluster);
    let inbox = cluster.inbox();
    wait_scanning(&cluster);
    let n = 2_000;

    write_and_wait(&cluster, &inbox.join("removed.csv"), &lines("rm", 1, n));
    std::fs::remove_file(inbox.join("removed.csv")).unwrap();

    let rewritten = inbox.join("rewritten.csv");
    write_and_wait(&cluster, &rewritten, &lines("rw", 1, n));
    // Same length, other bytes, no truncation: only the content says so.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&rewritten)
        .unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"XX").unwrap();
    drop(f);

    let truncated = inbox.join("truncated.csv");
    write_and_wait(&cluster, &truncated, &lines("tr", 1, n));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(100)
        .unwrap();

    write_and_wait(&cluster, &inbox.join("replaced.csv"), &lines("rp", 1, n));
    let staging = cluster.path().join("replacement.csv");
    std::fs::write(&staging, lines("new", 1, 10)).unwrap();
    std::fs::rename(&staging, inbox.join("replaced.csv")).unwrap();

    let jobs = wait_finished(&cluster, 5);
    let rejected = cluster.path().join("wds-data/rejected");
    for (name, reason) in [
        ("removed.csv", "removed"),
        ("rewritten.csv", "rewritten"),
        ("truncated.csv", "truncated"),
        ("replaced.csv", "replaced"),
    ] {
        let failed: Vec<_> = named(&jobs, name)
            .into_iter()
            .filter(|j| j["state"] == "failed")
            .collect();
        assert_eq!(failed.len(), 1, "{name}: one failed job in {jobs:?}");
        let job = failed[0];
        let failure = job["failure"].as_str().unwrap_or_default();
        assert!(failure.contains(reason), "{name}: {job}");
        // Every line read before the change is accounted (and delivered).
        assert_eq!(count(job, "lines"), n, "{job}");
        assert_eq!(count(job, "delivered"), n, "{job}");
        let note = std::fs::read_to_string(rejected.join(format!("{name}.reason.txt")))
            .unwrap_or_else(|e| panic!("{name}: no reason file in rejected/: {e}"));
        assert!(note.contains(reason), "{name}: {note}");
        assert!(rejected.join(name).exists(), "{name} is in rejected/");
    }
    // The file renamed over replaced.csv is a new job of its own.
    let new = named(&jobs, "replaced.csv")
        .into_iter()
        .find(|j| j["state"] == "done")
        .unwrap_or_else(|| panic!("no job for the replacement: {jobs:?}"));
    assert_eq!(count(new, "lines"), 10, "{new}");
    assert_each_user_once(
        &receiver,
        &[("rm", n), ("rw", n), ("tr", n), ("rp", n), ("new", 10)],
    );
    eprintln!("FIGURES changed while read ({mode:?}): removed/rewritten/truncated/replaced -> failed with {n} lines each, in rejected/ with a reason");
}

/// Case 5 as a person meets it: a big file overwritten in place (as `cp
/// other.csv big.csv` or a shell `>` does: truncated, then shorter content
/// written) while its job is part way through reading it. The process
/// reading the inbox is frozen (SIGSTOP) as soon as the job has pushed its
/// first lines and thawed once the overwrite is done, so the overwrite
/// lands mid-read however fast the machine reads.
fn overwritten_mid_read(mode: Mode) {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = mode.cluster(&[("WDS_WEBHOOK_URL", &url)]);
    let reader = mode.start(&mut cluster);
    let inbox = cluster.inbox();
    let total: u64 = 200_000;
    cluster.drop_file("big.csv", lines("big", 1, total).as_bytes());
    let deadline = Instant::now() + PATIENCE;
    let seen = loop {
        let read = cluster.jobs().and_then(|jobs| {
            let job = jobs.into_iter().find(|j| j["meta"]["name"] == "big.csv")?;
            job["lines"].as_u64().filter(|n| *n > 0)
        });
        if let Some(n) = read {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "big.csv's job never started reading:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    cluster.services[reader].signal("STOP");
    let overwrite = std::fs::write(inbox.join("big.csv"), lines("new", 1, 10));
    cluster.services[reader].signal("CONT");
    overwrite.unwrap();

    let jobs = wait_finished(&cluster, 1);
    let big = named(&jobs, "big.csv");
    assert_eq!(
        big.len(),
        1,
        "one job, the new content is not another: {jobs:?}"
    );
    let job = big[0];
    assert_eq!(job["state"], "failed", "{job}");
    let failure = job["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("truncated while being read"), "{job}");
    let read = count(job, "lines");
    assert!(
        read >= seen && read < total,
        "the overwrite must land part way through ({seen} lines seen before it): {job}"
    );
    // Every line read before the overwrite is accounted and delivered
    // once; nothing of the new content is sent.
    assert_eq!(count(job, "delivered"), read, "{job}");
    assert_each_user_once(&receiver, &[("big", read)]);
    let rejected = cluster.path().join("wds-data/rejected");
    let note = std::fs::read_to_string(rejected.join("big.csv.reason.txt"))
        .unwrap_or_else(|e| panic!("no reason file in rejected/: {e}"));
    assert!(note.contains("truncated"), "{note}");
    assert!(rejected.join("big.csv").exists(), "big.csv is in rejected/");
    eprintln!(
        "FIGURES overwritten mid-read ({mode:?}): {seen} lines pushed when frozen, job failed (truncated) \
         with {read} of {total} lines, each delivered once"
    );
}

fn symlinks_and_fifos(mode: Mode) {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    // A long settle time: each file over which a FIFO is renamed is
    // followed for 5 s of quiet after its close, which is when that lands.
    let mut cluster = mode.cluster(&[
        ("WDS_WEBHOOK_URL", &url),
        ("WDS_SETTLE_MS", "5000"),
        ("WDS_DEFAULT_MESSAGE", "hello"),
        ("WDS_TIMEOUT_MS", "2000"),
    ]);
    let reader = mode.start(&mut cluster);
    let inbox = cluster.inbox();

    // A file outside the inbox, linked in: its lines would be valid users.
    let secret = cluster.path().join("secret.txt");
    std::fs::write(&secret, lines("secret", 1, 50)).unwrap();
    std::os::unix::fs::symlink(&secret, inbox.join("link.csv")).unwrap();
    let mkfifo = |path: &Path| {
        let made = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
    };
    for i in 1..=4 {
        mkfifo(&inbox.join(format!("fifo{i}.csv")));
    }
    std::fs::create_dir(inbox.join("folder.csv")).unwrap();
    wait_listed(
        &cluster,
        &[
            "link.csv",
            "fifo1.csv",
            "fifo2.csv",
            "fifo3.csv",
            "fifo4.csv",
            "folder.csv",
        ],
    );
    // A FIFO renamed over each of four files whose jobs are reading them:
    // as many as the jobs one engine reads at once (4), so a reader stuck
    // on any of them would leave no slot for the file dropped after.
    let overs: Vec<String> = (1..=4).map(|i| format!("over{i}.csv")).collect();
    for (i, name) in overs.iter().enumerate() {
        let prefix = format!("over{}", i + 1);
        std::fs::write(inbox.join(name), lines(&prefix, 1, 500)).unwrap();
    }
    cluster.eventually("the four files read to their end", PATIENCE, || {
        let jobs = cluster.jobs()?;
        overs
            .iter()
            .all(|name| {
                named(&jobs, name)
                    .first()
                    .is_some_and(|j| j["state"] == "reading" && count(j, "lines") == 500)
            })
            .then_some(())
    });
    for name in &overs {
        let fifo = cluster.path().join(format!("staged-{name}"));
        mkfifo(&fifo);
        std::fs::rename(&fifo, inbox.join(name)).unwrap();
    }
    cluster.drop_file("marker.csv", lines("marker", 1, 100).as_bytes());

    let jobs = wait_finished(&cluster, 5);
    assert!(named(&jobs, "link.csv").is_empty(), "{jobs:?}");
    assert!(
        jobs.iter()
            .all(|j| !j["meta"]["name"].as_str().unwrap_or("").starts_with("fifo")),
        "{jobs:?}"
    );
    let rejected = cluster.path().join("wds-data/rejected");
    for name in &overs {
        let over = named(&jobs, name);
        assert_eq!(over.len(), 1, "{jobs:?}");
        let job = over[0];
        assert_eq!(job["state"], "failed", "{job}");
        let failure = job["failure"].as_str().unwrap_or_default();
        assert!(
            failure.contains("replaced under the same name"),
            "{name}: {job}"
        );
        assert_eq!(count(job, "delivered"), 500, "{job}");
        // What the job read is kept for a person, with the reason beside it.
        let kept = std::fs::read_to_string(rejected.join(name))
            .unwrap_or_else(|e| panic!("{name} is not in rejected/: {e}"));
        assert_eq!(kept.lines().count(), 500, "{name}: the file as read");
        let note = std::fs::read_to_string(rejected.join(format!("{name}.reason.txt")))
            .unwrap_or_else(|e| panic!("{name}: no reason file in rejected/: {e}"));
        assert!(
            note.contains("replaced under the same name"),
            "{name}: {note}"
        );
    }
    let marker = named(&jobs, "marker.csv");
    assert_eq!(marker.len(), 1, "{jobs:?}");
    assert_eq!(marker[0]["state"], "done", "{}", marker[0]);
    let (_, body) = http_get(&cluster.api, "/intake").expect("GET /intake");
    let skipped = skipped(&cluster).unwrap_or_else(|| panic!("GET /intake: {body}"));
    assert_eq!(
        skipped.get("link.csv").map(String::as_str),
        Some("a symbolic link"),
        "{body}"
    );
    assert_eq!(
        skipped.get("folder.csv").map(String::as_str),
        Some("a directory"),
        "{body}"
    );
    let fifos = (1..=4).map(|i| format!("fifo{i}.csv")).chain(overs.clone());
    for name in fifos {
        assert_eq!(
            skipped.get(&name).map(String::as_str),
            Some("a FIFO"),
            "{name}: {body}"
        );
    }
    assert_each_user_once(
        &receiver,
        &[
            ("over1", 500),
            ("over2", 500),
            ("over3", 500),
            ("over4", 500),
            ("marker", 100),
        ],
    );
    let log = cluster.services[reader].log_text();
    assert_eq!(
        log.matches("skipped: a FIFO").count(),
        8,
        "one warning each:\n{log}"
    );

    // Nothing blocks on a FIFO: SIGTERM ends the process at once.
    let started = Instant::now();
    cluster.services[reader].signal("TERM");
    let status = cluster.services[reader].wait(Duration::from_secs(7));
    assert!(
        status.is_some(),
        "the {} ignored SIGTERM:\n{}",
        mode.reader_role(),
        cluster.logs()
    );
    eprintln!(
        "FIGURES ({mode:?}) symlink + 4 FIFOs skipped, no secret line sent; 4 FIFOs renamed over files being read: \
         4 jobs failed (replaced), marker.csv done; {} stopped {} ms after SIGTERM",
        mode.reader_role(),
        started.elapsed().as_millis()
    );
}

/// `POST /upload` of a small CSV; the status.
fn upload(api: &str, body: &str) -> Option<u16> {
    http_upload(api, b"u.csv", body.as_bytes()).map(|(status, _)| status)
}

fn inbox_unlistable(mode: Mode) {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = mode.cluster(&[("WDS_WEBHOOK_URL", &url)]);
    mode.start(&mut cluster);
    let inbox = cluster.inbox();
    cluster.drop_file("before.csv", lines("before", 1, 100).as_bytes());
    wait_finished(&cluster, 1);

    let away = cluster.path().join("inbox-away");
    std::fs::rename(&inbox, &away).unwrap();
    let unhealthy =
        cluster.eventually(
            "/healthz to say the inbox is unreadable",
            PATIENCE,
            || match http_get(&cluster.api, "/healthz")? {
                (503, body) if body.contains("inbox") => Some(body),
                _ => None,
            },
        );
    assert_eq!(
        upload(&cluster.api, "up-1,hi\n"),
        Some(503),
        "an upload that would not be picked up is refused"
    );
    std::fs::rename(&away, &inbox).unwrap();
    cluster.eventually("/healthz to be 200 again", PATIENCE, || {
        (http_get(&cluster.api, "/healthz")?.0 == 200).then_some(())
    });
    cluster.drop_file("after.csv", lines("after", 1, 100).as_bytes());
    assert_eq!(upload(&cluster.api, "up-1,hi\n"), Some(202));
    let jobs = wait_finished(&cluster, 3);
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    // The file dropped and the one uploaded after the inbox came back are
    // read completely, like the one before.
    for job in &jobs {
        assert_eq!(job["state"], "done", "{job}");
        assert_eq!(count(job, "delivered"), count(job, "lines"), "{job}");
    }
    assert_eq!(named(&jobs, "after.csv").len(), 1, "{jobs:?}");
    assert_each_user_once(&receiver, &[("before", 100), ("after", 100), ("up", 1)]);
    eprintln!("FIGURES inbox away ({mode:?}): /healthz said {unhealthy}; intake resumed");
}

#[test]
fn sigterm_stops_every_role_with_redis_down_and_during_a_retry_after_pause() {
    // The receiver asks for a pause once the first file is in: 20 s, far
    // longer than the shutdown bound, short enough to wait for after the
    // restart below.
    let receiver = TestReceiver::with_script(|r| {
        if r.user.starts_with("paused") {
            Reply::TooMany { secs: 20 }
        } else {
            Reply::Ok
        }
    });
    let url = receiver.url();
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url), ("WDS_TIMEOUT_MS", "2000")]);
    let initiator = cluster.start("initiator", &[]);
    let worker = cluster.start("worker", &[]);
    // And the three roles in one process, on the same Redis and inbox (its
    // servers on ports of their own: the deployment binds port 0).
    let all = cluster.start("all", &[]);
    cluster.drop_file("first.csv", lines("first", 1, 100).as_bytes());
    wait_finished(&cluster, 1);

    // A Retry-After of 120 s in progress.
    cluster.drop_file("paused.csv", lines("paused", 1, 100).as_bytes());
    cluster.eventually("a 429 at the receiver", PATIENCE, || {
        receiver
            .hits()
            .iter()
            .any(|h| h.user.starts_with("paused"))
            .then_some(())
    });
    // Redis goes away while the initiator has a new file to claim.
    cluster.redis.kill();
    cluster.drop_file("stuck.csv", lines("stuck", 1, 100).as_bytes());
    cluster.eventually("the initiator to retry its backend", PATIENCE, || {
        cluster.services[initiator]
            .log_text()
            .contains("failed; retrying")
            .then_some(())
    });

    let bound = Duration::from_secs(5) + Duration::from_secs(2);
    let started = Instant::now();
    for index in [initiator, worker, all] {
        cluster.services[index].signal("TERM");
    }
    for index in [initiator, worker, all] {
        let name = cluster.services[index].name.clone();
        let left = bound.saturating_sub(started.elapsed()) + Duration::from_millis(500);
        let status = cluster.services[index].wait(left);
        assert!(
            status.is_some(),
            "{name} still runs {:?} after SIGTERM:\n{}",
            started.elapsed(),
            cluster.logs()
        );
    }
    let stopped_in = started.elapsed();

    // Redis back, the receiver accepting everything, the roles restarted:
    // the file that could not be claimed is delivered, nothing is sent
    // twice and every line is accounted for (G1, G2).
    receiver.set_script(|_| Reply::Ok);
    cluster.redis.restart();
    cluster.start("initiator", &[]);
    cluster.start("worker", &[]);
    let jobs = wait_finished(&cluster, 3);
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for job in &jobs {
        assert_eq!(job["state"], "done", "{job}");
        assert_eq!(count(job, "lines"), 100, "{job}");
    }
    for name in ["first.csv", "stuck.csv"] {
        let job = named(&jobs, name);
        assert_eq!(job.len(), 1, "{jobs:?}");
        assert_eq!(count(job[0], "delivered"), 100, "{}", job[0]);
    }
    // paused.csv's batch was marked as sending when the pause began, and
    // with Redis down the shutdown could not put it back: what the restart
    // did not deliver is dead-lettered as in doubt (G2; at-most-once never
    // sends those again), not lost without a trace.
    let paused = named(&jobs, "paused.csv");
    assert_eq!(paused.len(), 1, "{jobs:?}");
    let paused = paused[0];
    let paused_delivered = count(paused, "delivered");
    assert_eq!(
        paused_delivered + count(paused, "in_doubt"),
        100,
        "every paused line delivered or in doubt: {paused}"
    );
    let users = per_user(&receiver);
    let twice: Vec<_> = users.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "users alerted more than once: {twice:?}");
    for prefix in ["first", "stuck"] {
        for i in 1..=100 {
            let user = format!("{prefix}-{i}");
            assert!(users.contains_key(&user), "{user} was never alerted");
        }
    }
    let paused_alerted = users.keys().filter(|u| u.starts_with("paused-")).count() as u64;
    assert_eq!(
        paused_alerted, paused_delivered,
        "the receiver accepted as many paused users as the job says were delivered"
    );
    assert_eq!(users.len() as u64, 200 + paused_delivered, "{users:?}");
    assert!(cluster.panics().is_empty(), "{:?}", cluster.panics());
    eprintln!(
        "FIGURES SIGTERM with Redis down and a 20 s Retry-After: initiator, worker and all gone in {} ms; \
         after the restart 3 jobs done, first and stuck 100 users once each, paused {} delivered + {} in doubt",
        stopped_in.as_millis(),
        paused_delivered,
        count(paused, "in_doubt")
    );
}

fn archive_elsewhere(mode: Mode) {
    let shm = Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "this test needs /dev/shm (a tmpfs) for a second file system"
    );
    let archive = tempfile::tempdir_in(shm).unwrap();
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let archive_dir = archive.path().join("done");
    let archive_str = archive_dir.to_str().unwrap().to_string();
    let mut cluster = mode.cluster(&[("WDS_WEBHOOK_URL", &url), ("WDS_ARCHIVE", &archive_str)]);
    mode.start(&mut cluster);
    let inbox = cluster.inbox();
    {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (
            std::fs::metadata(&inbox).unwrap().dev(),
            std::fs::metadata(archive.path()).unwrap().dev(),
        );
        assert_ne!(a, b, "the archive must be on another file system");
    }
    let body = lines("far", 1, 1_000);
    cluster.drop_file("far.csv", body.as_bytes());
    std::fs::write(inbox.join("far2.csv.message"), "from the sidecar").unwrap();
    cluster.drop_file("far2.csv", b"far2-1\nfar2-2\n");
    let jobs = wait_finished(&cluster, 2);
    assert!(jobs.iter().all(|j| j["state"] == "done"), "{jobs:?}");
    let archived = cluster.eventually("both files in the archive", PATIENCE, || {
        let far = std::fs::read_to_string(archive_dir.join("far.csv")).ok()?;
        let sidecar = std::fs::read_to_string(archive_dir.join("far2.csv.message")).ok()?;
        Some((far, sidecar))
    });
    assert_eq!(archived.0, body, "archived whole");
    assert_eq!(archived.1, "from the sidecar");
    cluster.eventually("the inbox to be empty", PATIENCE, || {
        (std::fs::read_dir(&inbox).ok()?.count() == 0).then_some(())
    });
    assert_each_user_once(&receiver, &[("far", 1_000), ("far2", 2)]);
    assert!(
        !cluster.logs().contains("cannot move"),
        "{}",
        cluster.logs()
    );
    eprintln!(
        "FIGURES archive on another file system ({mode:?}): 2 files copied, synced and removed from the inbox"
    );
}

fn gone_while_down(mode: Mode) {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    // A long settle time: the job waits at the end of its file for 5 s of
    // quiet, which is when the process reading it is killed.
    let mut cluster = mode.cluster(&[("WDS_WEBHOOK_URL", &url), ("WDS_SETTLE_MS", "5000")]);
    let reader = mode.start(&mut cluster);
    let inbox = cluster.inbox();
    wait_scanning(&cluster);
    write_and_wait(
        &cluster,
        &inbox.join("orphan.csv"),
        &lines("orphan", 1, 500),
    );
    // Every line delivered before the kill (with `all`, the kill also
    // stops delivery; a line in flight then would be in doubt).
    cluster.eventually("the 500 lines delivered", PATIENCE, || {
        let job = wait_job(&cluster, "orphan.csv");
        (job["state"] == "reading" && count(&job, "delivered") == 500).then_some(())
    });
    cluster.services[reader].kill_9();
    std::fs::remove_file(inbox.join("orphan.csv")).unwrap();
    cluster.start(mode.reader_role(), &[]);

    let jobs = wait_finished(&cluster, 1);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "failed", "{}", jobs[0]);
    assert!(
        jobs[0]["failure"]
            .as_str()
            .unwrap_or_default()
            .contains("removed while no initiator"),
        "{}",
        jobs[0]
    );
    assert_eq!(count(&jobs[0], "delivered"), 500, "{}", jobs[0]);
    assert_each_user_once(&receiver, &[("orphan", 500)]);
}

#[test]
fn a_shell_append_loop_keeps_one_job_across_an_initiator_killed_and_restarted() {
    let receiver = TestReceiver::start();
    let url = receiver.url();
    let mut cluster = Cluster::new(&[("WDS_WEBHOOK_URL", &url), ("WDS_SETTLE_MS", "1000")]);
    let initiator = cluster.start("initiator", &[]);
    cluster.start("worker", &[]);
    let inbox = cluster.inbox();
    let looped = inbox.join("loop.csv");
    // 2,000 lines, a pause after every 500 so the job is reading and
    // following the file when its initiator dies.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(
            r#"i=1; while [ $i -le 2000 ]; do echo "kill-$i,intake test" >> "$F";
               [ $((i % 500)) -eq 0 ] && sleep 0.5; i=$((i+1)); done"#,
        )
        .env("F", &looped)
        .spawn()
        .unwrap();
    cluster.eventually("the loop's job to read some lines", PATIENCE, || {
        let job = wait_job(&cluster, "loop.csv");
        (count(&job, "lines") > 0).then_some(())
    });
    cluster.services[initiator].kill();
    cluster.start("initiator", &[]);
    assert!(writer.wait().unwrap().success());

    let jobs = wait_finished(&cluster, 1);
    let found = named(&jobs, "loop.csv");
    assert_eq!(found.len(), 1, "one job across the restart: {jobs:?}");
    assert_eq!(count(found[0], "lines"), 2_000, "{}", found[0]);
    assert_eq!(found[0]["state"], "done", "{}", found[0]);
    assert_each_user_once(&receiver, &[("kill", 2_000)]);
}
