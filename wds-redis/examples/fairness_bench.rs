//! Fair scheduling between jobs, on the memory and the Redis backends: how
//! long a 100-line job takes when it is dropped while a 1,000,000-line job
//! is delivering, next to how long it takes alone.
//!
//! ```text
//! cargo run --release -p wds-redis --example fairness_bench [big lines] [rate]
//! ```
//!
//! Deliveries go to a sink that does nothing, at `rate` a second (default
//! 50,000) so the big job (default 1,000,000 lines) takes a while. For each
//! backend it times the small job alone, then starts the big one, waits
//! until the big one has delivered 100,000 lines (so its backlog of ready
//! batches is full), drops the small one and times it from claim to
//! finish. It prints, too, the messages that were ready ahead of the small
//! job when it was dropped and how long delivering them first would have
//! taken at the measured rate: the wait the small job would have had if
//! batches were leased in push order.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wds_core::testkit::bench::{csv_input, NoopSink};
use wds_core::{backend::Backend, Engine, JobId};
use wds_memory::MemoryBackend;
use wds_redis::{RedisBackend, RedisServer};

/// Lines of the small job.
const SMALL: u64 = 100;

/// What one backend measured.
#[derive(Debug)]
struct Figures {
    alone: f64,
    beside_big: f64,
    ahead: u64,
    rate: f64,
}

/// The seconds from claim to finish of `job`, once it is finished.
async fn finished_secs(engine: &Engine, job: &JobId) -> Result<f64, Box<dyn std::error::Error>> {
    let report = engine.wait_for(job, Some(Duration::from_secs(600))).await?;
    if !report.is_complete() {
        return Err(format!("the job did not complete: {report:?}").into());
    }
    Ok(report.elapsed().map_or(0.0, |d| d.as_secs_f64()))
}

async fn measure(
    backend: impl Backend,
    big: u64,
    rate: u32,
    salt: &str,
) -> Result<Figures, Box<dyn std::error::Error>> {
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(NoopSink)
        .rate_limit(rate, rate.max(1) / 10)
        .build()?;
    let cancel = CancellationToken::new();
    let deliverer = tokio::spawn({
        let deliverer = engine.deliverer();
        let cancel = cancel.clone();
        async move { deliverer.run(cancel).await }
    });

    let alone = engine
        .submit(&csv_input(SMALL, &format!("{salt}-alone")))
        .await?;
    let alone = finished_secs(&engine, &alone.job).await?;

    let big_input = csv_input(big, &format!("{salt}-big"));
    let reader = tokio::spawn({
        let engine = engine.clone();
        async move { engine.submit(&big_input).await }
    });
    let started = Instant::now();
    let big_job = loop {
        let reports = backend.reports().await?;
        if let Some(r) = reports.iter().find(|r| r.meta.name.contains("-big")) {
            if r.delivered >= 100_000.min(big / 2) {
                break r.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rate_seen = big_job.delivered as f64 / started.elapsed().as_secs_f64();
    let ahead = backend.stats().await?.ready;
    let small = engine
        .submit(&csv_input(SMALL, &format!("{salt}-small")))
        .await?;
    let beside_big = finished_secs(&engine, &small.job).await?;
    let big_left = backend
        .report(&big_job.job)
        .await?
        .map_or(0, |r| r.lines - r.accounted());

    reader.await??;
    finished_secs(&engine, &big_job.job).await?;
    cancel.cancel();
    deliverer.await??;
    if big_left == 0 {
        eprintln!("warning: the big job had finished before the small one did");
    }
    Ok(Figures {
        alone,
        beside_big,
        ahead,
        rate: rate_seen,
    })
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<7} small job alone {:>6.3} s | beside the big job {:>6.3} s | \
         {:>7} messages ready ahead of it at {:>8.0}/s: {:>6.2} s in push order",
        f.alone,
        f.beside_big,
        f.ahead,
        f.rate,
        f.ahead as f64 / f.rate.max(1.0)
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let big: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let rate: u32 = args.next().map_or(Ok(50_000), |a| a.parse())?;
    println!("a {SMALL}-line job dropped while a {big}-line job delivers at up to {rate}/s");

    let memory = MemoryBackend::default();
    let f = measure(memory, big, rate, "memory").await?;
    print("memory", &f);

    let server = RedisServer::start();
    let redis = RedisBackend::builder(server.url())
        .prefix(format!("fair-{}", wds_core::backend::now_ms()))
        .connect()
        .await?;
    let f = measure(redis, big, rate, "redis").await?;
    print("redis", &f);
    Ok(())
}
