//! The folder source end to end on real files: hand-over, sidecars,
//! archiving, rejecting and shutdown.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::model::{Format, JobId, JobMeta, JobState};

/// Generous, for a loaded 2-core machine: only a failure waits this long.
const YIELD_TIMEOUT: Duration = Duration::from_secs(10);

fn fast(dir: &Path) -> FolderSourceBuilder {
    FolderSource::builder(dir)
        .settle(Duration::from_millis(300))
        .poll_interval(Duration::from_millis(100))
}

async fn next_input(source: &FolderSource) -> Input {
    tokio::time::timeout(YIELD_TIMEOUT, source.next())
        .await
        .expect("an input within the timeout")
        .expect("no error")
        .expect("the source is not shut down")
}

/// Asserts nothing is yielded for `wait` (can only pass wrongly, never
/// fail wrongly, on a slow machine).
async fn assert_nothing(source: &FolderSource, wait: Duration) {
    if let Ok(got) = tokio::time::timeout(wait, source.next()).await {
        panic!("expected nothing, got {got:?}");
    }
}

fn file_path(input: &Input) -> &Path {
    match &input.data {
        InputData::Opened(opened) => opened.path(),
        other => panic!("expected an opened file, got {other:?}"),
    }
}

fn report() -> JobReport {
    let meta = JobMeta::new("f.csv", Format::Csv, 0);
    let mut report = JobReport::new(JobId::new("j"), meta, JobState::Done);
    (report.lines, report.enqueued, report.delivered) = (1, 1, 1);
    report.finished_ms = Some(1);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yields_files_present_at_start_then_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.csv"), "u1,hi\n").unwrap();
    // Building needs no runtime; here it simply runs inside one.
    let source = fast(dir.path()).build().unwrap();

    let old = next_input(&source).await;
    assert_eq!(old.name, "old.csv");
    assert_eq!(old.format, None);
    assert_eq!(file_path(&old), source.dir().join("old.csv"));

    std::fs::write(dir.path().join("new.csv"), "u2,hi\n").unwrap();
    let new = next_input(&source).await;
    assert_eq!(new.name, "new.csv");
    assert_eq!(
        new.identity,
        Input::from_file(&dir.path().join("new.csv"))
            .unwrap()
            .identity
    );
    // Each file once.
    assert_nothing(&source, Duration::from_millis(800)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_write_does_not_wait_for_the_settle_time() {
    let dir = tempfile::tempdir().unwrap();
    let source = FolderSource::builder(dir.path())
        .settle(Duration::from_secs(3600))
        .build()
        .unwrap();
    // Start watching, then write: open, write, close.
    assert_nothing(&source, Duration::from_millis(200)).await;
    std::fs::write(dir.path().join("closed.csv"), "u1,hi\n").unwrap();
    assert_eq!(next_input(&source).await.name, "closed.csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_into_place_does_not_wait_for_the_settle_time() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let source = FolderSource::builder(dir.path())
        .settle(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert_nothing(&source, Duration::from_millis(200)).await;
    // Moved in from another folder: nothing says it is complete yet.
    std::fs::write(outside.path().join("moved.csv"), "u0,hi\n").unwrap();
    std::fs::rename(
        outside.path().join("moved.csv"),
        dir.path().join("moved.csv"),
    )
    .unwrap();
    // Written as .part and renamed into place: complete at once.
    std::fs::write(dir.path().join("users.csv.part"), "u1,hi\n").unwrap();
    std::fs::rename(
        dir.path().join("users.csv.part"),
        dir.path().join("users.csv"),
    )
    .unwrap();
    let input = tokio::time::timeout(Duration::from_secs(5), source.next())
        .await
        .expect("the renamed file within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(input.name, "users.csv");
    assert_nothing(&source, Duration::from_millis(1000)).await;
}

#[test]
fn builds_outside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let source = FolderSource::builder(dir.path()).build().unwrap();
    assert!(format!("{source:?}").contains("FolderSource"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignores_temporary_hidden_and_directories_until_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("x.part"), "u1,hi\n").unwrap();
    std::fs::write(d.join("x.tmp"), "u2,hi\n").unwrap();
    std::fs::write(d.join(".hidden"), "u3,hi\n").unwrap();
    std::fs::write(d.join("lonely.message"), "hello").unwrap();
    std::fs::create_dir(d.join("sub.csv")).unwrap();
    let source = fast(d).build().unwrap();

    std::fs::write(d.join("marker.csv"), "u4,hi\n").unwrap();
    assert_eq!(next_input(&source).await.name, "marker.csv");
    assert_nothing(&source, Duration::from_millis(1000)).await;

    std::fs::rename(d.join("x.part"), d.join("x.csv")).unwrap();
    let renamed = next_input(&source).await;
    assert_eq!(renamed.name, "x.csv");
    assert_nothing(&source, Duration::from_millis(1000)).await;
}

/// Appends a line every 200 ms for 2 s, keeping the file open, and checks
/// the file is handed over only after the last write, with the hash of
/// its full content.
async fn slow_writer_is_yielded_complete(builder: FolderSourceBuilder, dir: &Path) {
    // A settle time well above the pause between writes, so that a
    // descheduled writer does not look finished.
    let source = builder.settle(Duration::from_secs(1)).build().unwrap();
    let path = dir.join("slow.csv");
    let last_write_started = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let path = path.clone();
        let last_write_started = Arc::clone(&last_write_started);
        move || -> io::Result<()> {
            let mut file = std::fs::File::create(&path)?;
            for i in 0..10 {
                if i == 9 {
                    last_write_started.store(true, Ordering::SeqCst);
                }
                writeln!(file, "user{i},hello")?;
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        }
    });

    let input = next_input(&source).await;
    assert!(
        last_write_started.load(Ordering::SeqCst),
        "handed over before the last write"
    );
    writer.join().unwrap().unwrap();
    let full = Input::from_file(&path).unwrap();
    assert_eq!(input.identity, full.identity, "hash of the full content");
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_writer_is_yielded_only_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    slow_writer_is_yielded_complete(fast(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_alone_waits_for_slow_writer() {
    let dir = tempfile::tempdir().unwrap();
    slow_writer_is_yielded_complete(fast(dir.path()).without_watcher(), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_alone_finds_files() {
    let dir = tempfile::tempdir().unwrap();
    let source = fast(dir.path()).without_watcher().build().unwrap();
    std::fs::write(dir.path().join("a.csv"), "u1,hi\n").unwrap();
    assert_eq!(next_input(&source).await.name, "a.csv");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_message_overrides_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = fast(d)
        .default_message(Some("default".into()))
        .build()
        .unwrap();

    // As the upload does: sidecar first, then the data file into place.
    std::fs::write(d.join("job.csv.message"), "  Outage at 5pm \n").unwrap();
    std::fs::write(d.join("job.csv.part"), "u1\nu2\n").unwrap();
    std::fs::rename(d.join("job.csv.part"), d.join("job.csv")).unwrap();
    let input = next_input(&source).await;
    assert_eq!(input.name, "job.csv");
    assert_eq!(input.default_message.as_deref(), Some("Outage at 5pm"));
    let expected = Input::from_file(&d.join("job.csv"))
        .unwrap()
        .with_message("Outage at 5pm");
    assert_eq!(input.identity, expected.identity);

    std::fs::write(d.join("plain.csv"), "u3\n").unwrap();
    let plain = next_input(&source).await;
    assert_eq!(plain.default_message.as_deref(), Some("default"));

    std::fs::write(d.join("cleared.csv.message"), " \n").unwrap();
    std::fs::write(d.join("cleared.csv"), "u4\n").unwrap();
    let cleared = next_input(&source).await;
    assert_eq!(cleared.name, "cleared.csv");
    assert_eq!(cleared.default_message, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_moves_file_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("in");
    let archive = dir.path().join("done");
    std::fs::create_dir(&d).unwrap();
    let source = fast(&d).archive(Some(archive.clone())).build().unwrap();
    assert!(archive.is_dir(), "created by build");
    // A name already taken in the archive.
    std::fs::write(archive.join("a.csv"), "older\n").unwrap();

    std::fs::write(d.join("a.csv.message"), "hi").unwrap();
    std::fs::write(d.join("a.csv"), "u1\n").unwrap();
    let input = next_input(&source).await;
    source.finished(&input, &report()).await.unwrap();

    assert!(!d.join("a.csv").exists());
    assert!(!d.join("a.csv.message").exists());
    assert_eq!(
        std::fs::read_to_string(archive.join("a.csv")).unwrap(),
        "older\n"
    );
    assert_eq!(
        std::fs::read_to_string(archive.join("a.1.csv")).unwrap(),
        "u1\n"
    );
    assert_eq!(
        std::fs::read_to_string(archive.join("a.1.csv.message")).unwrap(),
        "hi"
    );
    // Moving it out is not a new file.
    assert_nothing(&source, Duration::from_millis(800)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_file_is_not_archived_but_yielded_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("in");
    std::fs::create_dir(&d).unwrap();
    let source = fast(&d)
        .archive(Some(dir.path().join("done")))
        .build()
        .unwrap();
    std::fs::write(d.join("a.csv"), "u1\n").unwrap();
    let first = next_input(&source).await;

    std::fs::write(d.join("a.csv.part"), "u1\nu2\n").unwrap();
    std::fs::rename(d.join("a.csv.part"), d.join("a.csv")).unwrap();
    source.finished(&first, &report()).await.unwrap();
    assert!(d.join("a.csv").exists(), "the new version stays");

    let second = next_input(&source).await;
    assert_eq!(second.name, "a.csv");
    assert_ne!(second.identity, first.identity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_jobs_file_goes_to_rejected_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("in");
    std::fs::create_dir(&d).unwrap();
    let rejected = dir.path().join("rejected");
    let source = fast(&d)
        .archive(Some(dir.path().join("done")))
        .rejected(Some(rejected.clone()))
        .build()
        .unwrap();
    std::fs::write(d.join("gone.csv"), "u1\nu2\n").unwrap();
    let input = next_input(&source).await;
    // Removed by a person while its job read it: kept from the handle.
    std::fs::remove_file(d.join("gone.csv")).unwrap();
    let mut failed = report();
    failed.state = JobState::Failed;
    failed.failure = Some("the file was removed".into());
    source.finished(&input, &failed).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(rejected.join("gone.csv")).unwrap(),
        "u1\nu2\n"
    );
    assert_eq!(
        std::fs::read_to_string(rejected.join("gone.csv.reason.txt")).unwrap(),
        "the file was removed\n"
    );
    assert!(!dir.path().join("done").join("gone.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let source = fast(dir.path()).build().unwrap();
    assert_nothing(&source, Duration::from_millis(200)).await;
    source.shutdown();
    let end = tokio::time::timeout(YIELD_TIMEOUT, source.next()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
}

#[test]
fn build_rejects_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = FolderSource::builder(&missing).build().unwrap_err();
    assert!(
        matches!(&err, Error::Config { setting: "folder", reason } if reason.contains("does not exist")),
        "{err}"
    );
    assert!(err.to_string().contains(&missing.display().to_string()));

    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = FolderSource::builder(&file).build().unwrap_err();
    assert!(
        matches!(&err, Error::Config { setting: "folder", reason } if reason.contains("not a directory")),
        "{err}"
    );

    let err = FolderSource::builder(dir.path())
        .settle(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                setting: "settle",
                ..
            }
        ),
        "{err}"
    );
    let err = FolderSource::builder(dir.path())
        .archive(Some(dir.path().to_path_buf()))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                setting: "archive",
                ..
            }
        ),
        "{err}"
    );
}
