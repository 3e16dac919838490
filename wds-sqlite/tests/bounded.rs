//! A file of invalid lines costs the SQLite backend under a byte a line: past
//! the detail limit a rejected line keeps its kind in a run, not a row.

use wds_core::testkit::bench::NoopSink;
use wds_core::{
    backend::{LineOutcome, OffsetStore, RejectKind, DETAIL_NOT_KEPT},
    Engine, Input, MessageId,
};
use wds_sqlite::SqliteBackend;

/// Bytes of the database's pages in use, as of its last commit (pages
/// still in the write-ahead log count; the log's own size, reused after
/// each checkpoint, does not).
async fn used(backend: &SqliteBackend) -> u64 {
    let storage = backend.storage().await.unwrap();
    storage.file_bytes - storage.free_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_invalid_lines_costs_under_a_byte_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(dir.path().join("wds.db"))
        .await
        .unwrap();
    let lines = 100_000u64;
    let input = Input::from_bytes("invalid.csv", "x\n".repeat(lines as usize).into_bytes());
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(NoopSink)
        .build()
        .unwrap();
    let before = used(&backend).await;
    let report = engine.run_once(&input).await.unwrap();
    let after = used(&backend).await;
    assert_eq!((report.lines, report.invalid), (lines, lines), "{report:?}");
    let per_line = after.saturating_sub(before) as f64 / lines as f64;
    println!("FIGURES sqlite: {per_line:.2} bytes per invalid line");
    // Under 10 is the product's bound; this backend keeps runs of a kind
    // per push past the detail limit, well under one byte a line (every
    // reject in detail, packed, costs about 4).
    assert!(per_line < 1.0, "{per_line:.2} bytes per invalid line");
    assert_eq!(
        backend
            .rejects(&report.job, usize::MAX)
            .await
            .unwrap()
            .len(),
        wds_core::backend::DEFAULT_DETAIL_LIMIT,
        "the first rejects are kept in detail"
    );
    let last = MessageId {
        job: report.job.clone(),
        line: lines,
    };
    assert_eq!(
        backend.outcome(&last).await.unwrap(),
        Some(LineOutcome::Rejected {
            kind: RejectKind::Invalid {
                reason: DETAIL_NOT_KEPT.into()
            }
        })
    );
}
