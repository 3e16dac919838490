//! The whole one-process pipeline: files dropped into a watched folder become
//! jobs, each identity once, and every line is accounted for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wds_core::{backend::OffsetStore, Engine, FolderSource, JobState, Source};
use wds_harness::{account, users_csv, ScriptedSink};
use wds_memory::MemoryBackend;

async fn wait_until_done(backend: &MemoryBackend, jobs: usize) -> Vec<wds_core::JobReport> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reports = backend.reports().await.unwrap();
        if reports.len() >= jobs && reports.iter().all(|r| r.state == JobState::Done) {
            return reports;
        }
        assert!(
            Instant::now() < deadline,
            "jobs not done in time: {reports:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_files_are_delivered_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let archive = dir.path().join("done");
    std::fs::create_dir_all(&inbox).unwrap();
    // One file present before the start, with a one-column twin that takes
    // its message from a sidecar.
    std::fs::write(inbox.join("early.csv"), users_csv(300)).unwrap();
    std::fs::write(inbox.join("ids.csv"), "userId\nu-1\nu-2\nu-3\n").unwrap();
    std::fs::write(inbox.join("ids.csv.message"), "Maintenance tonight\n").unwrap();

    let source = FolderSource::builder(&inbox)
        .settle(Duration::from_millis(300))
        .archive(Some(archive.clone()))
        .build()
        .unwrap();
    let backend = MemoryBackend::new();
    let sink = ScriptedSink::ok(Duration::ZERO);
    let engine = Engine::builder()
        .backend(backend.clone())
        .shared_sink(sink.clone())
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let source: Arc<dyn Source> = Arc::new(source);
    let run = tokio::spawn({
        let (engine, cancel) = (engine.clone(), cancel.clone());
        async move { engine.run(source, cancel).await }
    });

    // A file written under a .part name and renamed into place, then the
    // same content dropped again under another name: one job, not two.
    let body = users_csv(1_000);
    std::fs::write(inbox.join("late.csv.part"), &body).unwrap();
    std::fs::rename(inbox.join("late.csv.part"), inbox.join("late.csv")).unwrap();
    wait_until_done(&backend, 3).await;
    std::fs::write(inbox.join("late-again.csv"), &body).unwrap();
    // The copy is seen, settled, hashed, recognised and archived: once it
    // has left the inbox, whatever it was going to do has been done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while inbox.join("late-again.csv").exists() {
        assert!(Instant::now() < deadline, "the copy was never handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        archive.join("late-again.csv").exists(),
        "the copy is archived"
    );
    let reports = wait_until_done(&backend, 3).await;
    cancel.cancel();
    run.await.unwrap().unwrap();

    assert_eq!(
        reports.len(),
        3,
        "the copy must not become a job: {reports:?}"
    );
    let mut lines = 0;
    for report in &reports {
        // ids.csv has a header, so its records are lines 2 to 4.
        let first = if report.meta.name == "ids.csv" { 2 } else { 1 };
        account(&backend, report, first..first + report.lines).await;
        lines += report.lines;
    }
    assert_eq!(lines, 300 + 3 + 1_000);
    let per_id = sink.calls_per_id();
    assert_eq!(per_id.len() as u64, lines);
    assert!(per_id.values().all(|&n| n == 1));
    let ids = reports.iter().find(|r| r.meta.name == "ids.csv").unwrap();
    assert_eq!(
        ids.meta.default_message.as_deref(),
        Some("Maintenance tonight")
    );
    assert_eq!(ids.delivered, 3);
    assert!(
        archive.join("early.csv").exists(),
        "finished files are archived"
    );
}
