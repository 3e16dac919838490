//! The `wds_core::testkit` conformance suite on [`SqliteBackend`], as the
//! concrete type and through `Arc<dyn Queue>` / `Arc<dyn OffsetStore>`.
//! Each check gets a new database file in the test's temporary folder.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wds_core::backend::CircuitStore;
use wds_core::backend::WorkerRegistry;
use wds_core::{
    backend::{OffsetStore, Queue},
    testkit,
};
use wds_sqlite::SqliteBackend;

/// A backend on a new file under `dir`.
async fn fresh(dir: &std::path::Path) -> SqliteBackend {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = dir.join(format!("check-{}.db", N.fetch_add(1, Ordering::Relaxed)));
    match SqliteBackend::open(&path).await {
        Ok(backend) => backend,
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    }
}

fn temp_dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot make a temporary folder: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_conforms() {
    let dir = temp_dir();
    testkit::run_all(|| fresh(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_conforms_through_trait_objects() {
    let dir = temp_dir();
    testkit::run_all_views(|| async {
        let backend = fresh(dir.path()).await;
        let queue: Arc<dyn Queue> = Arc::new(backend.clone());
        let offsets: Arc<dyn OffsetStore> = Arc::new(backend);
        (queue, offsets)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_conforms_to_job_control() {
    let dir = temp_dir();
    testkit::run_control(|| fresh(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_circuits_conform() {
    let dir = temp_dir();
    let backend = fresh(dir.path()).await;
    // One process per file: the second view is a clone, as every task of
    // that process shares.
    let other: Arc<dyn CircuitStore> = Arc::new(backend.clone());
    testkit::circuit_store_conforms(&backend, other.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_workers_conform() {
    let dir = temp_dir();
    let retention = Duration::from_millis(1_500);
    let backend = SqliteBackend::builder(dir.path().join("workers.db"))
        .worker_retention(retention)
        .open()
        .await
        .expect("open the database");
    let other: Arc<dyn WorkerRegistry> = Arc::new(backend.clone());
    testkit::workers_are_seen_and_forgotten(&backend, other.as_ref(), retention).await;
}
