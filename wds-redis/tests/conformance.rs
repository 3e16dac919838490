//! The `wds_core::testkit` conformance suite against a real redis-server,
//! on [`RedisBackend`] as the concrete type and through `Arc<dyn Queue>` /
//! `Arc<dyn OffsetStore>`. Each check gets a fresh key prefix on the
//! test's own server, which is as good as an empty Redis.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{fresh, fresh_sharded};
use wds_core::backend::{CircuitStore, OffsetStore, Queue, WorkerRegistry};
use wds_core::testkit;
use wds_redis::{RedisBackend, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_conforms() {
    let server = RedisServer::start();
    let url = server.url();
    testkit::run_all(|| fresh(&url, "concrete")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_conforms_through_trait_objects() {
    let server = RedisServer::start();
    let url = server.url();
    testkit::run_all_views(|| async {
        let backend = fresh(&url, "dyn").await;
        let queue: Arc<dyn Queue> = Arc::new(backend.clone());
        let offsets: Arc<dyn OffsetStore> = Arc::new(backend);
        (queue, offsets)
    })
    .await;
}

/// Jobs spread over key shards (as on a Redis Cluster, here on one server):
/// every call finds its job's shard, leases go round the shards, and
/// listings gather them in claim order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_conforms_with_jobs_on_several_shards() {
    let server = RedisServer::start();
    let url = server.url();
    testkit::run_all_sharded(|| async {
        let backend = fresh_sharded(&url, "sharded", 5).await;
        (backend.clone(), backend)
    })
    .await;
    testkit::run_control(|| fresh_sharded(&url, "sharded-control", 5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_conforms_to_job_control() {
    let server = RedisServer::start();
    let url = server.url();
    testkit::run_control(|| fresh(&url, "control")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_circuits_conform_across_connections() {
    let server = RedisServer::start();
    let url = server.url();
    // Two connection pools on one prefix: two workers.
    let connect = || async {
        RedisBackend::builder(&url)
            .prefix("circuits")
            .connect()
            .await
            .expect("connect to the test redis-server")
    };
    let a = connect().await;
    let b: Arc<dyn CircuitStore> = Arc::new(connect().await);
    testkit::circuit_store_conforms(&a, b.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_workers_conform_across_connections() {
    let server = RedisServer::start();
    let url = server.url();
    let retention = Duration::from_millis(1_500);
    // Two connection pools on one prefix: two processes.
    let connect = || async {
        RedisBackend::builder(&url)
            .prefix("workers")
            .worker_retention(retention)
            .connect()
            .await
            .expect("connect to the test redis-server")
    };
    let a = connect().await;
    let b: Arc<dyn WorkerRegistry> = Arc::new(connect().await);
    testkit::workers_are_seen_and_forgotten(&a, b.as_ref(), retention).await;
    // Forgotten means gone from Redis too: the keys hold only the worker
    // that kept beating, so they never grow with every worker that ran.
    let mut conn = wds_redis::redis::Client::open(url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let held: (u64, u64) = wds_redis::redis::pipe()
        .hlen("{workers}:workers")
        .zcard("{workers}:workers:seen")
        .query_async(&mut conn)
        .await
        .expect("HLEN, ZCARD");
    assert_eq!(held, (1, 1), "pruned workers are deleted from both keys");
}
