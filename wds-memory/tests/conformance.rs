//! The `wds_core::testkit` conformance suite, run on [`MemoryBackend`] as
//! the concrete type, through `Arc<dyn Queue>` / `Arc<dyn OffsetStore>`, and
//! type-erased as an `AnyBackend`.

use std::sync::Arc;
use std::time::Duration;

use wds_core::backend::WorkerRegistry;
use wds_core::backend::{AnyBackend, CircuitStore};
use wds_core::{
    backend::{OffsetStore, Queue},
    testkit,
};
use wds_memory::MemoryBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    testkit::run_all(|| async { MemoryBackend::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms_as_any_backend() {
    testkit::run_all(|| async { Arc::new(MemoryBackend::default()) as AnyBackend }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms_through_trait_objects() {
    testkit::run_all_views(|| async {
        let backend = MemoryBackend::default();
        let queue: Arc<dyn Queue> = Arc::new(backend.clone());
        let offsets: Arc<dyn OffsetStore> = Arc::new(backend);
        (queue, offsets)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms_to_job_control() {
    testkit::run_control(|| async { MemoryBackend::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_circuits_conform() {
    let backend = MemoryBackend::default();
    let other: Arc<dyn CircuitStore> = Arc::new(backend.clone());
    testkit::circuit_store_conforms(&backend, other.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_workers_conform() {
    let retention = Duration::from_millis(1_500);
    let backend = MemoryBackend::default().with_worker_retention(retention);
    let other: Arc<dyn WorkerRegistry> = Arc::new(backend.clone());
    testkit::workers_are_seen_and_forgotten(&backend, other.as_ref(), retention).await;
}
