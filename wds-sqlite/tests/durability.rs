//! What the SQLite backend adds to the conformance suite: state survives a
//! reopen, one process at a time, a bad or full file is an error that
//! loses nothing already stored, and the detail limit is a setting.

use std::time::Duration;

use wds_core::{
    backend::{
        now_ms, Checkpoint, LineOutcome, OffsetStore, Push, Queue, Reject, RejectKind, Settle,
        DETAIL_NOT_KEPT,
    },
    DeadKind, DeadReason, Error, Format, JobId, JobMeta, JobState, Message, MessageId,
};
use wds_sqlite::SqliteBackend;

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temporary folder: {e}"))
}

async fn open(path: &std::path::Path) -> SqliteBackend {
    SqliteBackend::open(path)
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

fn meta() -> JobMeta {
    JobMeta::new("users.csv", Format::Csv, now_ms())
}

fn messages(job: &JobId, lines: std::ops::Range<u64>) -> Vec<Message> {
    lines
        .map(|line| Message::fresh(job, line, format!("user-{line}"), format!("alert {line}")))
        .collect()
}

fn push(job: &JobId, seq: u64, lines: std::ops::Range<u64>, done: bool) -> Push {
    let end = lines.end;
    Push {
        job: job.clone(),
        messages: messages(job, lines),
        rejects: Vec::new(),
        next: Checkpoint {
            seq: seq + 1,
            byte: end * 10,
            line: end,
            records: end - 1,
            done,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let job = {
        let backend = open(&path).await;
        let job = backend.claim("file-1", meta()).await.unwrap().job;
        backend.push(&push(&job, 0, 1..101, false)).await.unwrap();
        backend.push(&push(&job, 1, 101..201, true)).await.unwrap();
        let leases = backend.lease(1, Duration::from_secs(60)).await.unwrap();
        backend
            .settle(&leases[0], &wds_core::testkit::all_delivered(&leases[0]))
            .await
            .unwrap();
        // A lease held when the process goes away: it comes back at once
        // after a reopen (no other process can hold it), not at its deadline.
        let held = backend.lease(1, Duration::from_secs(600)).await.unwrap();
        backend.mark_sending(&held[0]).await.unwrap();
        job
    };
    let backend = open(&path).await;
    let claim = backend.claim("file-1", meta()).await.unwrap();
    assert!(!claim.fresh, "a reopened database must remember the claim");
    let stats = backend.stats().await.unwrap();
    assert_eq!(
        (stats.ready, stats.leased, stats.scheduled, stats.dead),
        (0, 100, 0, 0),
        "the queue's counts are rebuilt from the file"
    );
    let report = backend
        .report(&job)
        .await
        .unwrap()
        .expect("the job survives");
    assert_eq!(
        (report.lines, report.delivered, report.state),
        (200, 100, JobState::Delivering)
    );
    assert_eq!(backend.checkpoint(&job).await.unwrap().seq, 2);
    let outcome = backend
        .outcome(&MessageId {
            job: job.clone(),
            line: 50,
        })
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            Some(wds_core::backend::LineOutcome::Delivered { .. })
        ),
        "{outcome:?}"
    );
    let again = backend.lease(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "the expired lease is reclaimed after the reopen"
    );
    assert!(
        again[0].previously_sending,
        "and it is known to have been sending"
    );
    backend
        .settle(&again[0], &wds_core::testkit::all_delivered(&again[0]))
        .await
        .unwrap();
    let report = backend.report(&job).await.unwrap().expect("the job");
    assert_eq!((report.delivered, report.state), (200, JobState::Done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_is_refused_until_the_first_is_dropped() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let first = open(&path).await;
    let job = first.claim("file-1", meta()).await.unwrap().job;
    match SqliteBackend::open(&path).await {
        Err(Error::Config {
            setting: "path",
            reason: message,
        }) => {
            assert!(message.contains("another WDS process"), "{message}")
        }
        other => panic!("a second open must be refused, got {other:?}"),
    }
    // The refusal touched nothing.
    assert!(first.report(&job).await.unwrap().is_some());
    drop(first);
    let second = open(&path).await;
    assert!(second.report(&job).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &junk).unwrap();
    match SqliteBackend::open(&path).await {
        Err(e @ Error::Corrupt { .. }) => {
            assert!(e.to_string().contains("not a WDS database"), "{e}")
        }
        other => panic!("a junk file must be refused as corrupt, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        junk,
        "the file is left as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_refused_at_open() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    {
        let backend = open(&path).await;
        let job = backend.claim("file-1", meta()).await.unwrap().job;
        for seq in 0..20 {
            let lines = seq * 100 + 1..seq * 100 + 101;
            backend.push(&push(&job, seq, lines, false)).await.unwrap();
        }
    }
    // Overwrite a page in the middle of the file (not the header).
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 4 * 4096, "the database has several pages");
    for b in &mut bytes[2 * 4096..3 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    match SqliteBackend::open(&path).await {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("restore"), "{e}"),
        other => panic!("a damaged file must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_fails_writes_and_keeps_what_it_has() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let backend = SqliteBackend::builder(&path)
        .max_size(Some(256 * 1024))
        .open()
        .await
        .unwrap();
    let job = backend.claim("file-1", meta()).await.unwrap().job;
    let mut seq = 0;
    let error = loop {
        let lines = seq * 100 + 1..seq * 100 + 101;
        match backend.push(&push(&job, seq, lines, false)).await {
            Ok(_) => seq += 1,
            Err(e) => break e,
        }
        assert!(seq < 1000, "256 KB must fill up");
    };
    assert!(error.is_retryable(), "a full disk is retried: {error}");
    assert!(error.to_string().contains("full"), "{error}");
    let report = backend.report(&job).await.unwrap().expect("the job");
    assert_eq!(report.enqueued, seq * 100, "every applied push is kept");
    assert_eq!(backend.checkpoint(&job).await.unwrap().seq, seq);
    // Room again once batches are settled: the same push now applies.
    let leases = backend.lease(5, Duration::from_secs(60)).await.unwrap();
    for lease in &leases {
        backend
            .settle(lease, &wds_core::testkit::all_delivered(lease))
            .await
            .unwrap();
    }
    let lines = seq * 100 + 1..seq * 100 + 101;
    backend.push(&push(&job, seq, lines, false)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_open_is_a_consistent_database() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let backend = open(&path).await;
    let job = backend.claim("file-1", meta()).await.unwrap().job;
    backend.push(&push(&job, 0, 1..101, true)).await.unwrap();
    let leases = backend.lease(1, Duration::from_secs(60)).await.unwrap();
    backend
        .settle(&leases[0], &wds_core::testkit::all_delivered(&leases[0]))
        .await
        .unwrap();
    let copy = dir.path().join("backup.db");
    backend.backup(&copy).await.unwrap();
    assert!(
        backend.backup(&copy).await.is_err(),
        "a backup never overwrites a file"
    );
    let storage = backend.storage().await.unwrap();
    assert!(storage.file_bytes > 0 && storage.free_bytes <= storage.file_bytes);
    drop(backend);
    let restored = open(&copy).await;
    let report = restored
        .report(&job)
        .await
        .unwrap()
        .expect("the job is in the backup");
    assert_eq!((report.delivered, report.state), (100, JobState::Done));
}

/// `push` with the lines `invalid` rejected instead of sent.
fn rejecting(mut push: Push, invalid: std::ops::Range<u64>) -> Push {
    push.messages.retain(|m| !invalid.contains(&m.id.line));
    push.rejects = invalid
        .map(|line| Reject {
            line,
            kind: RejectKind::Invalid {
                reason: format!("line {line}: no user id"),
            },
        })
        .collect();
    push
}

async fn kept_lines(backend: &SqliteBackend, job: &JobId) -> Vec<u64> {
    let rejects = backend.rejects(job, usize::MAX).await.unwrap();
    rejects.iter().map(|r| r.line).collect()
}

async fn outcome(backend: &SqliteBackend, job: &JobId, line: u64) -> Option<LineOutcome> {
    let id = MessageId {
        job: job.clone(),
        line,
    };
    backend.outcome(&id).await.unwrap()
}

fn invalid(reason: &str) -> Option<LineOutcome> {
    let reason = reason.into();
    Some(LineOutcome::Rejected {
        kind: RejectKind::Invalid { reason },
    })
}

/// The conformance suite checks the default limit; this one, that the
/// setting is what counts, and that what a job kept survives a reopen
/// under another limit (which applies from then on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_limit_is_a_setting_and_what_was_kept_survives_a_reopen() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let open_with = |limit| SqliteBackend::builder(&path).detail_limit(limit).open();
    let job = {
        let backend = open_with(4).await.unwrap();
        let job = backend.claim("file-1", meta()).await.unwrap().job;
        let first = rejecting(push(&job, 0, 1..7, false), 1..7);
        backend.push(&first).await.unwrap();
        assert_eq!(kept_lines(&backend, &job).await, vec![1, 2, 3, 4]);
        job
    };
    // Reopened with room for 10: 6 more in detail, counted from the 4 kept.
    let backend = open_with(10).await.unwrap();
    assert_eq!(
        outcome(&backend, &job, 4).await,
        invalid("line 4: no user id")
    );
    assert_eq!(outcome(&backend, &job, 5).await, invalid(DETAIL_NOT_KEPT));
    let second = rejecting(push(&job, 1, 7..27, true), 7..15);
    backend.push(&second).await.unwrap();
    assert_eq!(
        kept_lines(&backend, &job).await,
        vec![1, 2, 3, 4, 7, 8, 9, 10, 11, 12]
    );
    assert_eq!(outcome(&backend, &job, 13).await, invalid(DETAIL_NOT_KEPT));

    // Dead letters: 10 of the 12 keep their detail.
    let leases = backend.lease(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(leases.len(), 1);
    let reason = DeadReason {
        kind: DeadKind::Permanent,
        detail: "404 no such user".into(),
    };
    let outcomes: Vec<Settle> = leases[0]
        .batch
        .messages
        .iter()
        .map(|m| Settle::Dead {
            message: m.clone(),
            reason: reason.clone(),
        })
        .collect();
    backend.settle(&leases[0], &outcomes).await.unwrap();
    let letters = backend.dead_letters(Some(&job), usize::MAX).await.unwrap();
    let not_kept = letters
        .iter()
        .filter(|d| d.reason.detail == DETAIL_NOT_KEPT)
        .count();
    assert_eq!((letters.len(), not_kept), (12, 2));
    let report = backend.report(&job).await.unwrap().unwrap();
    assert_eq!(
        (report.lines, report.invalid, report.dead),
        (26, 14, 12),
        "{report:?}"
    );
}

/// Calls sent together share one commit on the connection thread (group
/// commit): each must still be all or nothing on its own, a refused one
/// must not undo the others, and none is answered before it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_share_a_commit_each_stay_all_or_nothing() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let backend = open(&path).await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(
            backend
                .claim(&format!("file-{i}"), meta())
                .await
                .unwrap()
                .job,
        );
    }
    const ROUNDS: u64 = 20;
    for round in 0..ROUNDS {
        // Per job, in one burst: the next push, and one from the future
        // (refused as a conflict, with nothing written).
        let mut calls = tokio::task::JoinSet::new();
        for job in &jobs {
            let lines = round * 100 + 1..round * 100 + 101;
            for (seq, good) in [(round, true), (round + 5, false)] {
                let (backend, p) = (backend.clone(), push(job, seq, lines.clone(), false));
                calls.spawn(async move { (good, backend.push(&p).await) });
            }
        }
        while let Some(done) = calls.join_next().await {
            match done.unwrap() {
                (true, Ok(pushed)) => assert!(pushed.applied),
                (false, Err(Error::Conflict { .. })) => {}
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        for job in &jobs {
            assert_eq!(backend.checkpoint(job).await.unwrap().seq, round + 1);
        }
    }
    let ready = backend.stats().await.unwrap().ready;
    assert_eq!(ready, 8 * ROUNDS * 100);
    drop(backend);
    // The counts come back from the tables: what was answered was stored.
    let backend = open(&path).await;
    assert_eq!(backend.stats().await.unwrap().ready, ready);
    for job in &jobs {
        let report = backend.report(job).await.unwrap().expect("the job");
        assert_eq!(report.enqueued, ROUNDS * 100);
    }
    // Every batch comes back whole, with its payload.
    let mut delivered = 0;
    loop {
        let leases = backend.lease(16, Duration::from_secs(60)).await.unwrap();
        if leases.is_empty() {
            break;
        }
        for lease in &leases {
            assert_eq!(lease.batch.messages.len(), 100);
            delivered += 100;
            backend
                .settle(lease, &wds_core::testkit::all_delivered(lease))
                .await
                .unwrap();
        }
    }
    assert_eq!(delivered, 8 * ROUNDS * 100);
}

/// The write-ahead log is copied into the database file in the background
/// (every second), not only when 40 MB of it have piled up: a copy of the
/// file alone, without its `-wal`, soon holds what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_checkpointed_into_the_file_in_the_background() {
    let dir = temp_dir();
    let path = dir.path().join("wds.db");
    let backend = open(&path).await;
    let job = backend.claim("file-1", meta()).await.unwrap().job;
    backend.push(&push(&job, 0, 1..101, true)).await.unwrap();
    let copy = dir.path().join("copy.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let enqueued = loop {
        // The file alone, as a crash that lost the log would leave it.
        let _ = std::fs::remove_file(&copy);
        std::fs::copy(&path, &copy).unwrap();
        let found = rusqlite::Connection::open(&copy).and_then(|c| {
            c.query_row(
                "SELECT enqueued FROM jobs WHERE job = ?1",
                [job.as_str()],
                |r| r.get::<_, i64>(0),
            )
        });
        match found {
            Ok(n) if n == 100 => break n,
            _ if std::time::Instant::now() > deadline => {
                panic!("the push never reached the database file: {found:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(enqueued, 100);
}
