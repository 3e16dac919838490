//! The shared rate limiter: four workers (four `RedisLimiter`s on four
//! backends) never exceed rate + burst in any one-second window together,
//! still reach the rate, and all see a back-off one of them stores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wds_core::{backend::now_ms, limiter::Limiter};
use wds_redis::{RedisBackend, RedisLimiter, RedisServer};

const RATE: u32 = 200;
const BURST: u32 = 20;

async fn limiter(server: &RedisServer, endpoint: &str) -> RedisLimiter {
    let backend = match RedisBackend::builder(server.url())
        .prefix("limits")
        .connect()
        .await
    {
        Ok(backend) => backend,
        Err(e) => panic!("cannot connect to the test redis-server: {e}"),
    };
    RedisLimiter::new(&backend, endpoint, RATE, BURST).expect("limiter")
}

/// The most timestamps in any window of `window` starting at one of them.
fn busiest_window(times: &[Instant], window: Duration) -> usize {
    let mut end = 0;
    let mut most = 0;
    for (start, t) in times.iter().enumerate() {
        while end < times.len() && times[end] < *t + window {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_the_rate() {
    let server = RedisServer::start();
    let run_for = Duration::from_secs(3);
    let times = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let limiter = limiter(&server, "api").await;
        let times = times.clone();
        workers.push(tokio::spawn(async move {
            while start.elapsed() < run_for {
                limiter.acquire(1).await.expect("acquire");
                times.lock().unwrap().push(Instant::now());
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let mut times = times.lock().unwrap().clone();
    times.sort();
    let elapsed = times.last().map_or(run_for, |t| t.duration_since(start));

    let most = busiest_window(&times, Duration::from_secs(1));
    eprintln!(
        "{} permits in {elapsed:?} over 4 workers; busiest second: {most}",
        times.len()
    );
    assert!(
        most <= (RATE + BURST) as usize,
        "{most} permits in one second across the workers; the limit is rate + burst = {}",
        RATE + BURST
    );
    // The steady rate after the initial burst.
    let steady = (times.len() as f64 - f64::from(BURST)) / elapsed.as_secs_f64();
    assert!(
        steady >= 0.9 * f64::from(RATE),
        "the workers together reached only {steady:.0} permits/s of {RATE}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_off_is_seen_by_every_worker() {
    let server = RedisServer::start();
    let a = limiter(&server, "busy-api").await;
    let b = limiter(&server, "busy-api").await;
    let other = limiter(&server, "other-api").await;
    b.acquire(1).await.expect("acquire before the back-off");

    a.back_off(now_ms() + 600).await.expect("back_off");
    // A shorter back-off never shortens it.
    a.back_off(now_ms() + 50).await.expect("back_off");

    // `b` may still hold permits it reserved before the back-off; they are
    // good for one look-ahead (10 permits at 200/s: 50 ms), not later.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    b.acquire(1).await.expect("acquire during the back-off");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "another worker's acquire must wait out the back-off, waited {waited:?}"
    );

    let started = Instant::now();
    other.acquire(1).await.expect("acquire on another endpoint");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "a back-off holds only its own endpoint"
    );
}

#[tokio::test]
async fn a_zero_rate_is_a_config_error() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(server.url())
        .connect()
        .await
        .expect("connect");
    assert!(RedisLimiter::new(&backend, "x", 0, 1).is_err());
    assert!(RedisLimiter::new(&backend, "x", 1, 0).is_err());
}

/// Without a rate: a back-off stored by one worker's `RedisBackOff` stops
/// the others within their 100 ms poll, and a `RedisLimiter` of the same
/// endpoint sees it too (one key for both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_off_without_a_rate_is_seen_by_every_worker() {
    let server = RedisServer::start();
    let backend = |server: &RedisServer| {
        let url = server.url();
        async move {
            RedisBackend::builder(url)
                .prefix("limits")
                .connect()
                .await
                .expect("connect to the test redis-server")
        }
    };
    let first = wds_redis::RedisBackOff::new(&backend(&server).await, "api");
    let second = wds_redis::RedisBackOff::new(&backend(&server).await, "api");
    // No pause: acquiring is immediate, the first call of each polls Redis.
    let started = Instant::now();
    for _ in 0..1_000 {
        second.acquire(1).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    let pause = Duration::from_millis(600);
    first
        .back_off(now_ms() + pause.as_millis() as u64)
        .await
        .unwrap();
    let backed_off = Instant::now();
    // The second worker goes on for at most one poll, then waits it out.
    let mut last = backed_off;
    while last.duration_since(backed_off) < pause + Duration::from_millis(100) {
        second.acquire(1).await.unwrap();
        let now = Instant::now();
        let gap = now.duration_since(last);
        last = now;
        if gap > Duration::from_millis(300) {
            // The wait: it began within a poll and ended with the pause.
            let began = now - gap;
            assert!(
                began.duration_since(backed_off) <= Duration::from_millis(150),
                "the pause was noticed {:?} after it began",
                began.duration_since(backed_off)
            );
            assert!(
                now.duration_since(backed_off) + Duration::from_millis(30) >= pause,
                "the wait ended {:?} into a {pause:?} pause",
                now.duration_since(backed_off)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            now.duration_since(backed_off) < pause,
            "the second worker never paused"
        );
    }
    // Same key as a rate limiter of that endpoint.
    assert_eq!(first.key(), limiter(&server, "api").await.key());
}
