//! `DeliveryThreads` (thread-per-core delivery) on a real `Engine` over the
//! memory backend: every message is delivered once across the threads,
//! each thread calls its own sink from a thread of its own and keeps to its
//! share of the concurrency, and a deliverer that fails stops the others
//! and is reported.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wds_core::engine::DeliveryThreads;
use wds_core::{async_trait, Delivered, Engine, EngineConfig, Input, Message, Sink, SinkError};
use wds_harness::users_csv;
use wds_memory::MemoryBackend;

/// A sink that records which thread made each call and how many of its
/// calls were in flight at once.
#[derive(Debug, Default)]
struct ThreadSink {
    calls: Mutex<Vec<(String, String)>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

#[async_trait]
impl Sink for ThreadSink {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.calls
            .lock()
            .unwrap()
            .push((message.id.to_string(), thread));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(Delivered::with_status(200))
    }
}

/// An engine on the memory backend: batches of 20, 10 calls in flight.
fn engine() -> Engine {
    let mut c = EngineConfig::default();
    c.batch_size = 20;
    c.concurrency = 10;
    c.idle_poll = Duration::from_millis(10);
    Engine::builder()
        .backend(MemoryBackend::new())
        .sink(ThreadSink::default())
        .config(c)
        .build()
        .expect("engine")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_delivered_once_across_the_threads_each_within_its_share() {
    let lines = 2_000;
    let engine = engine();
    let sinks: Vec<Arc<ThreadSink>> = (0..3).map(|_| Arc::default()).collect();
    let threads = DeliveryThreads::new(&engine, 3, |i| Ok(sinks[i].clone() as Arc<dyn Sink>))
        .expect("threads");
    assert_eq!(threads.deliverers().len(), 3);
    assert_eq!(threads.concurrency_limit(), 10, "the shares add up");

    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (threads, cancel) = (threads.clone(), cancel.clone());
        async move { threads.run(cancel).await }
    });
    let input = Input::from_bytes("users.csv", users_csv(lines));
    let read = engine.submit(&input).await.expect("read");
    let report = tokio::time::timeout(Duration::from_secs(60), engine.wait_for(&read.job, None))
        .await
        .expect("the job finishes")
        .expect("the job runs");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the threads stop")
        .expect("not panicked")
        .expect("no deliverer failed");

    assert_eq!(report.delivered, lines as u64, "{report:?}");
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut names = HashSet::new();
    for (i, sink) in sinks.iter().enumerate() {
        let calls = sink.calls.lock().unwrap();
        assert!(!calls.is_empty(), "thread {i} delivered nothing");
        // Each sink is called from one thread, its own.
        let own: HashSet<&str> = calls.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(own.len(), 1, "sink {i} called from {own:?}");
        names.extend(own.into_iter().map(str::to_string));
        for (id, _) in calls.iter() {
            *per_id.entry(id.clone()).or_default() += 1;
        }
        // Shares of 10 calls over 3 threads: 4, 3, 3.
        let share = [4, 3, 3][i];
        let most = sink.most_in_flight.load(Ordering::SeqCst);
        assert!(most <= share, "sink {i}: {most} calls at once > {share}");
    }
    assert_eq!(names.len(), 3, "three threads: {names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("wds-deliver-")),
        "{names:?}"
    );
    assert_eq!(per_id.len(), lines, "every message called");
    assert!(per_id.values().all(|n| *n == 1), "a message called twice");
}

#[test]
fn the_concurrency_is_split_into_shares_that_add_up() {
    let mut c = EngineConfig::default();
    c.concurrency = 64;
    let shares = |n| -> Vec<usize> { c.split(n).iter().map(|c| c.concurrency).collect() };
    assert_eq!(shares(1), [64]);
    assert_eq!(shares(2), [32, 32]);
    assert_eq!(shares(5), [13, 13, 13, 13, 12]);
    c.concurrency = 2;
    // Never more deliverers than calls, never none.
    assert_eq!(c.split(8).len(), 2);
    assert_eq!(c.split(0).len(), 1);
    c.concurrency = 64;
    // Each thread holds its sending window (2 batches) and one waiting:
    // 6 batches leased ahead on two threads, against 4 on one.
    let held: Vec<usize> = c
        .split(2)
        .iter()
        .map(|c| c.effective_batches_in_flight())
        .collect();
    assert_eq!(held, [3, 3]);
    assert_eq!(c.split(1)[0].effective_batches_in_flight(), 4);
    let auto = DeliveryThreads::auto(&c);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        auto,
        cores.clamp(1, 2),
        "one per core, at least 32 calls each"
    );
}

#[tokio::test]
async fn a_sink_that_cannot_be_made_or_zero_threads_is_an_error() {
    let engine = engine();
    let made = DeliveryThreads::new(&engine, 2, |i| match i {
        0 => Ok(Arc::new(ThreadSink::default()) as Arc<dyn Sink>),
        _ => Err(wds_core::Error::config("webhook", "no client for you")),
    });
    let e = made.expect_err("the second sink failed");
    assert!(e.to_string().contains("no client for you"), "{e}");
    let e = DeliveryThreads::new(&engine, 0, |_| {
        Ok(Arc::new(ThreadSink::default()) as Arc<dyn Sink>)
    })
    .expect_err("zero threads");
    assert!(e.to_string().contains("at least 1"), "{e}");
}
