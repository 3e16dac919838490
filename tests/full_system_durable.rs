//! `full_system all` on its default backend (SQLite at DATA_DIR/wds.db) as
//! real processes: stopped with SIGTERM or killed with SIGKILL mid-job and
//! restarted, it finishes the job with every user alerted once; a second
//! process on the same data dir, a damaged, unwritable or full database
//! each get a clear error and lose nothing already recorded.
//!
//! Every delivery is counted at a [`TestReceiver`] that records repeats
//! (not the bundled notifier, which drops them). The tests with a small
//! disk mount a tmpfs, so they need root (as CI has); without it they fail
//! and say so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wds_harness::http::{http_get, http_post};
use wds_harness::ports::ANY_PORT;
use wds_harness::process::{poll_until, Service};
use wds_harness::receiver::TestReceiver;
use wds_harness::users_csv;

/// Lines of the big file: the 100,000.
const LINES: u64 = 100_000;
/// The in-doubt bound of one `all` process at the default settings
/// (concurrency 64, batch size 100): `concurrency / batch_size + 2`
/// batches of 100 per delivery thread (docs/guarantees.md).
fn in_doubt_bound() -> u64 {
    wds_harness::checks::worker_in_doubt_window(&wds_core::EngineConfig::default())
}

/// One data dir (a temporary folder) and the control API of the `all`
/// process started last on it (each binds port 0 and prints its address).
struct Local {
    dir: tempfile::TempDir,
    api: std::cell::RefCell<String>,
    webhook: String,
}

impl Local {
    fn new(receiver: &TestReceiver) -> Local {
        Local {
            dir: tempfile::tempdir().expect("temporary folder"),
            api: Default::default(),
            webhook: receiver.url(),
        }
    }

    /// The control API of the process started last by `start_ready`.
    fn api(&self) -> String {
        self.api.borrow().clone()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("wds-data")
    }

    /// `full_system all` with `extra` flags, delivering to the receiver.
    fn start(&self, name: &str, extra: &[&str]) -> Service {
        let mut args = vec![
            "all",
            "--api-listen",
            ANY_PORT,
            "--notifier-listen",
            ANY_PORT,
        ];
        args.extend_from_slice(extra);
        Service::start(
            name,
            self.dir.path(),
            &args,
            &[("WDS_WEBHOOK_URL", &self.webhook), ("WDS_SETTLE_MS", "200")],
        )
    }

    /// Starts `all` and waits until its control API answers.
    fn start_ready(&self, name: &str, extra: &[&str]) -> Service {
        let mut service = self.start(name, extra);
        let running = service.wait_for_line("WDS running", Duration::from_secs(120));
        let api = running
            .split("control API http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no control API address in {running:?}"));
        *self.api.borrow_mut() = api.to_string();
        eventually(
            &format!("{name} to serve /healthz"),
            Duration::from_secs(60),
            || {
                if let Some(status) = service.wait(Duration::ZERO) {
                    panic!("{name} exited ({status}):\n{}", service.log_text());
                }
                http_get(&self.api(), "/healthz")
                    .filter(|(status, _)| *status == 200)
                    .map(drop)
            },
        );
        service
    }

    /// Writes a file under a dot name and renames it into the inbox.
    fn drop_file(&self, name: &str, body: &[u8]) {
        let inbox = self.data().join("inbox");
        std::fs::create_dir_all(&inbox).expect("inbox");
        let part = inbox.join(format!(".{name}.part"));
        std::fs::write(&part, body).expect("write the file");
        std::fs::rename(&part, inbox.join(name)).expect("rename into the inbox");
    }

    /// `GET /jobs`, when the API answers.
    fn jobs(&self) -> Option<Vec<Value>> {
        let (status, body) = http_get(&self.api(), "/jobs")?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// Waits until there is one job and it is done; returns it.
    fn wait_done(&self, service: &mut Service, timeout: Duration) -> Value {
        eventually("the job to be done", timeout, || {
            if let Some(status) = service.wait(Duration::ZERO) {
                panic!(
                    "{} exited ({status}):\n{}",
                    service.name,
                    service.log_text()
                );
            }
            let jobs = self.jobs()?;
            assert!(jobs.len() <= 1, "one file, one job: {jobs:?}");
            jobs.into_iter().next().filter(|job| job["state"] == "done")
        })
    }

    /// SIGTERM, and the process exits 0 within a deadline.
    fn stop(&self, mut service: Service) {
        service.signal("TERM");
        let status = service
            .wait(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{} did not stop:\n{}", service.name, service.log_text()));
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{}",
            service.name,
            service.log_text()
        );
    }
}

/// Polls `f` every 50 ms until it answers, or panics after `timeout`.
fn eventually<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

fn count(job: &Value, field: &str) -> u64 {
    job[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {job}"))
}

/// Runs a process to its end (it must fail) and returns its log.
fn refused(mut service: Service) -> String {
    let status = service
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{} was not refused:\n{}", service.name, service.log_text()));
    let log = service.log_text();
    assert!(!status.success(), "{} started:\n{log}", service.name);
    assert!(
        !log.contains("panicked"),
        "{} panicked:\n{log}",
        service.name
    );
    log
}

/// Stops `all` at about 30% of a 100,000-line job with `signal`, restarts
/// it, and waits until the job is done. Returns the job and the receiver's
/// count when the process stopped.
fn interrupt_and_restart(local: &Local, receiver: &TestReceiver, signal: &str) -> (Value, usize) {
    let started = Instant::now();
    let mut first = local.start_ready("all-1", &[]);
    local.drop_file("users.csv", &users_csv(LINES as usize));
    eventually(
        "30% of the users to be alerted",
        Duration::from_secs(180),
        || (receiver.count() as u64 >= LINES * 3 / 10).then_some(()),
    );
    first.signal(signal);
    let status = first
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("all-1 did not stop:\n{}", first.log_text()));
    if signal == "TERM" {
        assert!(
            status.success(),
            "all-1 after SIGTERM: {status}\n{}",
            first.log_text()
        );
    }
    let at_stop = receiver.count();
    assert!(
        (at_stop as u64) < LINES,
        "the job finished before the {signal}: the test would prove nothing"
    );
    let stopped = started.elapsed().as_secs_f64();
    let mut second = local.start_ready("all-2", &[]);
    let job = local.wait_done(&mut second, Duration::from_secs(300));
    eprintln!(
        "FIGURES SIG{signal} at {at_stop} alerted ({stopped:.1} s in), done {:.1} s after the restart",
        started.elapsed().as_secs_f64() - stopped
    );
    // The archived file is not a new job, and the restart read nothing twice.
    assert!(
        local.data().join("done/users.csv").exists(),
        "the file is archived once read"
    );
    assert_eq!(local.jobs().map(|j| j.len()), Some(1), "one file, one job");
    assert_eq!(count(&job, "lines"), LINES, "{job}");
    assert_eq!(
        count(&job, "enqueued"),
        LINES,
        "no line pushed twice: {job}"
    );
    local.stop(second);
    (job, at_stop)
}

#[test]
fn sigterm_mid_job_then_restart_alerts_every_user_exactly_once() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let (job, _) = interrupt_and_restart(&local, &receiver, "TERM");
    assert_eq!(count(&job, "delivered"), LINES, "G2 exact: {job}");
    assert_eq!(
        count(&job, "dead"),
        0,
        "a graceful stop leaves nothing in doubt: {job}"
    );
    let per_id = receiver.per_id();
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "users alerted more than once: {twice:?}");
    assert_eq!(per_id.len() as u64, LINES, "every user alerted");
    assert_eq!(receiver.count() as u64, LINES);
}

#[test]
fn kill_9_mid_job_then_restart_alerts_nobody_twice_and_replays_the_doubt() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let (job, at_kill) = interrupt_and_restart(&local, &receiver, "KILL");
    let (delivered, dead, in_doubt) = (
        count(&job, "delivered"),
        count(&job, "dead"),
        count(&job, "in_doubt"),
    );
    assert_eq!(delivered + dead, LINES, "every line accounted: {job}");
    assert_eq!(
        dead, in_doubt,
        "only the killed process's batches are dead: {job}"
    );
    let bound = in_doubt_bound();
    assert!(
        in_doubt <= bound,
        "in doubt {in_doubt} > bound {bound}: {job}"
    );
    let per_id = receiver.per_id();
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "users alerted twice in at-most-once mode: {twice:?}"
    );
    let received = per_id.len() as u64;
    assert!(
        (delivered..=delivered + in_doubt).contains(&received),
        "received {received} users; delivered {delivered}, in doubt {in_doubt}"
    );

    // The in-doubt set is replayable: POST /retry sends it again.
    let mut again = local.start_ready("all-3", &[]);
    let (status, body) = http_post(&local.api(), "/retry", "").expect("POST /retry answers");
    assert_eq!(status, 200, "{body}");
    let replayed: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(replayed["replayed"].as_u64(), Some(in_doubt), "{body}");
    let job = if in_doubt > 0 {
        eventually(
            "the replayed job to be done",
            Duration::from_secs(120),
            || {
                let jobs = local.jobs()?;
                jobs.into_iter()
                    .next()
                    .filter(|j| j["state"] == "done" && j["dead"] == 0)
            },
        )
    } else {
        local.wait_done(&mut again, Duration::from_secs(60))
    };
    assert_eq!(count(&job, "delivered"), LINES, "{job}");
    let per_id = receiver.per_id();
    assert_eq!(
        per_id.len() as u64,
        LINES,
        "every user alerted after the replay"
    );
    let repeats = per_id.values().filter(|n| **n > 1).count() as u64;
    assert!(
        repeats <= in_doubt,
        "{repeats} repeats, only the {in_doubt} in doubt may repeat"
    );
    eprintln!(
        "FIGURES kill -9 at {at_kill} alerted: in doubt {in_doubt} (bound {bound}), \
         {} of them had arrived (alerted twice after the replay)",
        repeats
    );
    local.stop(again);
}

#[test]
fn kill_9_as_soon_as_the_file_is_claimed_then_restart_reads_on_from_the_checkpoint() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let mut first = local.start_ready("all-1", &[]);
    local.drop_file("users.csv", &users_csv(LINES as usize));
    let claimed = eventually("the file to be claimed", Duration::from_secs(60), || {
        local.jobs()?.into_iter().next()
    });
    first.signal("KILL");
    first.wait(Duration::from_secs(30));
    let at_kill = receiver.count();
    let mut second = local.start_ready("all-2", &[]);
    let job = local.wait_done(&mut second, Duration::from_secs(300));
    eprintln!(
        "FIGURES kill -9 at the claim: state {}, {} of {LINES} lines read, {at_kill} alerted; \
         after the restart: delivered {}, in doubt {}",
        claimed["state"], claimed["lines"], job["delivered"], job["in_doubt"]
    );
    assert_eq!(count(&job, "lines"), LINES, "{job}");
    assert_eq!(
        count(&job, "enqueued"),
        LINES,
        "no line pushed twice: {job}"
    );
    let (delivered, dead) = (count(&job, "delivered"), count(&job, "dead"));
    assert_eq!(delivered + dead, LINES, "{job}");
    assert!(count(&job, "in_doubt") <= in_doubt_bound(), "{job}");
    let per_id = receiver.per_id();
    assert!(per_id.values().all(|n| *n == 1), "a user alerted twice");
    assert!((delivered..=delivered + dead).contains(&(per_id.len() as u64)));
    local.stop(second);
}

#[test]
fn a_second_all_on_the_same_data_dir_is_refused() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let first = local.start_ready("all-1", &[]);
    let log = refused(Service::start(
        "all-2",
        local.dir.path(),
        &[
            "all",
            "--api-listen",
            ANY_PORT,
            "--notifier-listen",
            ANY_PORT,
        ],
        &[("WDS_WEBHOOK_URL", &local.webhook)],
    ));
    assert!(log.contains("another WDS process"), "{log}");
    // The first goes on as if nothing happened.
    local.drop_file("few.csv", &users_csv(500));
    let mut first = first;
    let job = local.wait_done(&mut first, Duration::from_secs(60));
    assert_eq!(count(&job, "delivered"), 500, "{job}");
    local.stop(first);
}

#[test]
fn a_damaged_database_is_refused_and_left_as_it_is() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let db = local.data().join("wds.db");
    // A database with a finished job in it, then the page of its jobs table
    // overwritten.
    let mut all = local.start_ready("all-1", &[]);
    local.drop_file("users.csv", &users_csv(20_000));
    local.wait_done(&mut all, Duration::from_secs(120));
    local.stop(all);
    // The page that holds the jobs table (one job: the root is its leaf).
    let page = {
        use wds_sqlite::rusqlite::{Connection, OpenFlags};
        let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database to find a page");
        conn.query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'jobs'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("the jobs table")
    } as usize;
    let mut bytes = std::fs::read(&db).expect("the database file");
    let start = (page - 1) * 4096;
    bytes[start..start + 4096].fill(0xA5);
    std::fs::write(&db, &bytes).expect("damage the file");
    let log = refused(local.start("all-2", &[]));
    assert!(log.contains("damaged") && log.contains("restore"), "{log}");
    assert_eq!(
        std::fs::read(&db).expect("db"),
        bytes,
        "the damaged file is left for recovery"
    );

    // Not a database at all.
    let junk: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(&db, &junk).expect("junk");
    let log = refused(local.start("all-3", &[]));
    assert!(log.contains("not a WDS database"), "{log}");
    assert_eq!(
        std::fs::read(&db).expect("db"),
        junk,
        "the file is left as it was"
    );
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let tmpfs = Tmpfs {
            path: path.to_path_buf(),
        };
        tmpfs.mount_with(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]);
        tmpfs
    }

    fn remount(&self, options: &str) {
        self.mount_with(&["-o", &format!("remount,{options}")]);
    }

    fn mount_with(&self, args: &[&str]) {
        let out = Command::new("mount")
            .args(args)
            .arg(&self.path)
            .output()
            .expect("cannot run mount(8)");
        assert!(
            out.status.success(),
            "this test makes a small disk with `mount {}` and needs root for it: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn an_unwritable_database_is_refused_and_keeps_its_jobs() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let disk = Tmpfs::mount(&local.dir.path().join("disk"), "64m");
    let db = disk.path.join("wds.db");
    let db_flag = ["--db", db.to_str().expect("utf-8 path")];
    let mut all = local.start_ready("all-1", &db_flag);
    local.drop_file("users.csv", &users_csv(1_000));
    local.wait_done(&mut all, Duration::from_secs(60));
    local.stop(all);

    disk.remount("ro");
    let log = refused(local.start("all-2", &db_flag));
    assert!(log.contains("must be writable"), "{log}");

    disk.remount("rw");
    let all = local.start_ready("all-3", &db_flag);
    let jobs = local.jobs().expect("/jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "done", "{jobs:?}");
    assert_eq!(count(&jobs[0], "delivered"), 1_000, "{jobs:?}");
    local.stop(all);
    assert_eq!(receiver.count(), 1_000, "nobody alerted again");
}

#[test]
fn a_full_disk_stalls_the_job_with_a_clear_error_and_loses_nothing() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let disk = Tmpfs::mount(&local.dir.path().join("disk"), "3m");
    let db = disk.path.join("wds.db");
    let mut all = local.start_ready("all-1", &["--db", db.to_str().expect("utf-8 path")]);
    let lines = 50_000u64;
    local.drop_file("users.csv", &users_csv(lines as usize));
    eventually("the disk to fill", Duration::from_secs(120), || {
        if let Some(status) = all.wait(Duration::ZERO) {
            panic!("all exited on a full disk ({status}):\n{}", all.log_text());
        }
        all.log_text()
            .contains("database or disk is full")
            .then_some(())
    });
    // Stuck, not dead: the API still answers and the job is not done. (Its
    // reads share the database's one connection thread with the writes
    // that are failing and being retried: on a loaded machine one GET may
    // time out, so the API is given a few seconds, not one try.)
    let jobs = eventually(
        "the API to answer while the disk is full",
        Duration::from_secs(30),
        || local.jobs(),
    );
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_ne!(jobs[0]["state"], "done", "{jobs:?}");
    let stuck_at = receiver.count();

    // Room again: the same process finishes the job, nothing lost or doubled.
    disk.remount("size=256m");
    let job = local.wait_done(&mut all, Duration::from_secs(180));
    assert_eq!(count(&job, "lines"), lines, "{job}");
    assert_eq!(
        count(&job, "delivered") + count(&job, "dead"),
        lines,
        "{job}"
    );
    let per_id = receiver.per_id();
    let twice = per_id.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "users alerted twice");
    // Batches whose settle waited past their lease for room are in doubt
    // (dead, possibly received); every other line was delivered once.
    let (delivered, dead) = (count(&job, "delivered"), count(&job, "dead"));
    assert_eq!(dead, count(&job, "in_doubt"), "{job}");
    let received = per_id.len() as u64;
    assert!(
        (delivered..=delivered + dead).contains(&received),
        "received {received}; {job}"
    );
    eprintln!(
        "FIGURES full disk: {stuck_at} alerted when the 3 MB disk filled; after it grew: \
         delivered {}, dead {}",
        count(&job, "delivered"),
        count(&job, "dead")
    );
    local.stop(all);
}

#[test]
fn the_backend_flag_says_what_it_does() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    let log = refused(local.start("redis-without-url", &["--backend", "redis"]));
    assert!(log.contains("--backend redis needs --redis"), "{log}");
    let memory = local.start_ready("memory", &["--backend", "memory"]);
    let warning = "a restart (or a crash) forgets all of them";
    eventually(
        "the memory backend's warning",
        Duration::from_secs(10),
        || memory.log_text().contains(warning).then_some(()),
    );
    assert!(
        !local.data().join("wds.db").exists(),
        "the memory backend writes no database"
    );
    local.stop(memory);
    let sqlite = local.start_ready("sqlite", &[]);
    assert!(
        local.data().join("wds.db").exists(),
        "the default is SQLite at DATA_DIR/wds.db"
    );
    assert!(
        !sqlite.log_text().contains(warning),
        "{}",
        sqlite.log_text()
    );
    local.stop(sqlite);
}

/// A file with more (user, message) pairs than the duplicate filter keeps in
/// memory is deduplicated on disk, exactly: every repeat counted as a
/// duplicate and never sent, also when the process is killed with SIGKILL
/// mid-delivery and restarted on the same data dir.
#[test]
fn a_file_bigger_than_the_duplicate_filters_memory_is_deduplicated_on_disk_across_a_kill() {
    let receiver = TestReceiver::start();
    let local = Local::new(&receiver);
    // Every tenth line repeats the line 1,001 lines before it (same user,
    // same message), so the first and the repeat are in different runs.
    let mut lines: Vec<String> = Vec::new();
    let mut user = 0;
    for i in 1..=20_000 {
        if i % 10 == 0 && i > 1_001 {
            lines.push(lines[i - 1_002].clone());
        } else {
            user += 1;
            lines.push(format!("user-{user},Your order {user} has shipped"));
        }
    }
    let repeats = lines.len() - user;
    let body = lines.join("\n") + "\n";
    let budget = ["--dedupe-memory-pairs", "1000"];
    let mut first = local.start_ready("all-1", &budget);
    local.drop_file("users.csv", body.as_bytes());
    eventually(
        "a fifth of the users to be alerted",
        Duration::from_secs(180),
        || (receiver.count() >= user / 5).then_some(()),
    );
    first.signal("KILL");
    first.wait(Duration::from_secs(30));
    assert!(
        first
            .log_text()
            .contains("duplicate filter spilled to disk"),
        "the filter did not spill: the test would prove nothing\n{}",
        first.log_text()
    );
    let mut second = local.start_ready("all-2", &budget);
    let job = local.wait_done(&mut second, Duration::from_secs(300));
    assert_eq!(count(&job, "lines"), lines.len() as u64, "{job}");
    assert_eq!(
        count(&job, "duplicate"),
        repeats as u64,
        "every repeat found: {job}"
    );
    assert_eq!(count(&job, "enqueued"), user as u64, "{job}");
    let (delivered, dead) = (count(&job, "delivered"), count(&job, "dead"));
    assert_eq!(delivered + dead, user as u64, "{job}");
    assert!(dead <= in_doubt_bound(), "{job}");
    let mut per_user = std::collections::HashMap::<String, u32>::new();
    for hit in receiver.hits() {
        *per_user.entry(hit.user).or_default() += 1;
    }
    let twice: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "users alerted more than once: {twice:?}");
    assert!(per_user.len() as u64 >= delivered, "{job}");
    local.stop(second);
}
