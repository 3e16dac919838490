//! The circuit breaker in one process: two deliverers (two workers) on one
//! memory backend, a sink that is down for a while in the middle of a
//! file. Messages are held while the circuit is open (only probes go out)
//! and keep their attempts: nothing is dead-lettered, nobody is sent twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wds_core::backend::CircuitStore;
use wds_core::retry::RetryPolicy;
use wds_core::{Engine, EngineConfig, Input};
use wds_harness::{users_csv, ScriptedSink, Step};
use wds_memory::MemoryBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_holds_messages_and_spends_no_attempt() {
    let lines = 6_000usize;
    let outage = Duration::from_secs(3);
    let grace = Duration::from_millis(500);
    let down = Arc::new(AtomicBool::new(false));
    let sink = ScriptedSink::new({
        let down = down.clone();
        move |_, _| {
            if down.load(Ordering::SeqCst) {
                Step::Fail
            } else {
                Step::Ok(Duration::from_millis(1))
            }
        }
    });
    let mut config = EngineConfig::default();
    config.batch_size = 20;
    config.concurrency = 16;
    // Without the breaker, 4 attempts spread over ~1.5 s: an outage of 3 s
    // kills every message it meets.
    config.retry = RetryPolicy::default();
    config.retry.max_attempts = 4;
    config.retry.base_delay = Duration::from_millis(100);
    config.retry.max_delay = Duration::from_millis(800);
    config.circuit.first_probe_interval = Duration::from_millis(200);
    config.circuit.max_probe_interval = Duration::from_millis(400);
    let backend = MemoryBackend::default();
    let circuits: Arc<dyn CircuitStore> = Arc::new(backend.clone());
    let engines: Vec<Engine> = (0..2)
        .map(|_| {
            Engine::builder()
                .backend(backend.clone())
                .shared_sink(sink.clone())
                .config(config.clone())
                .circuit(circuits.clone(), "the-endpoint")
                .build()
                .expect("engine")
        })
        .collect();
    let cancel = tokio_util::sync::CancellationToken::new();
    let workers: Vec<_> = engines
        .iter()
        .map(|e| {
            let (deliverer, cancel) = (e.deliverer(), cancel.clone());
            tokio::spawn(async move { deliverer.run(cancel).await })
        })
        .collect();
    let input = Input::from_bytes("users.csv", users_csv(lines));
    let job = engines[0].submit(&input).await.expect("submit").job;

    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.call_count() < lines / 4 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    down.store(true, Ordering::SeqCst);
    let went_down = Instant::now();
    tokio::time::sleep(outage).await;
    down.store(false, Ordering::SeqCst);
    let came_up = Instant::now();
    let report = engines[0]
        .wait_for(&job, Some(Duration::from_secs(60)))
        .await
        .expect("report");
    cancel.cancel();
    for w in workers {
        w.await.expect("join").expect("deliverer");
    }

    assert_eq!(report.delivered, lines as u64, "{report:?}");
    assert_eq!(report.dead, 0, "{report:?}");
    let calls = sink.calls();
    let probes = calls
        .iter()
        .filter(|c| c.at >= went_down + grace && c.at < came_up)
        .count();
    // Probes every 200, then 400 ms: about 7 in 2.5 s.
    assert!(
        (1..=12).contains(&probes),
        "{probes} calls after the grace of the outage (only probes)"
    );
    let during = calls
        .iter()
        .filter(|c| c.at >= went_down && c.at < came_up)
        .count();
    eprintln!("FIGURES in-process outage: {during} calls during it, {probes} after {grace:?}");
}
