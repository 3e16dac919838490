//! Adaptive concurrency against an endpoint with a knee: fixed
//! concurrencies and `auto` side by side, in one run.
//!
//! ```text
//! cargo run --release -p wds-http --example concurrency_bench
//! cargo run --release -p wds-http --example concurrency_bench -- --k 32 --service-ms 10 --lines 30000
//! ```
//!
//! The adaptive limit is the engine's (`wds-core`); it lives here because it
//! drives the product's `HttpSink` on the memory backend, which only this
//! crate has together without a dependency cycle.
//!
//! The receiver (in this process, on 127.0.0.1) serves at most K requests
//! at once in `--service-ms` each and queues the rest, so past K calls in
//! flight the latency grows and the throughput does not; past 4K in flight
//! it answers 503 at once. One worker (an engine on the memory backend with
//! the product's `HttpSink`) delivers `--lines` users at each concurrency:
//! K, 2K, 256, then `auto` (adaptive, at most 256). It prints each run's
//! throughput, its share of 503 answers and its calls-in-flight limit, and
//! checks the targets: `auto` at least 90% of the best fixed throughput
//! with under 1% 503s, while fixed 256 meets 503s.

#[path = "concurrency_bench/knee.rs"]
mod knee;

use std::time::{Duration, Instant};

use clap::Parser;
use tokio_util::sync::CancellationToken;
use wds_core::retry::RetryPolicy;
use wds_core::testkit::bench::csv_input;
use wds_core::{Engine, EngineConfig};
use wds_http::HttpSink;
use wds_memory::MemoryBackend;

use crate::knee::KneeReceiver;

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Fixed concurrencies and `auto` against a receiver with a knee.
#[derive(Debug, Parser)]
#[command(name = "concurrency_bench")]
struct Args {
    /// Requests the receiver serves at once (its knee); 503 past 4 × K.
    #[arg(long, default_value_t = 32)]
    k: usize,
    /// How long the receiver takes to serve one request (milliseconds).
    #[arg(long, default_value_t = 10)]
    service_ms: u64,
    /// Users delivered at each concurrency.
    #[arg(long, default_value_t = 30_000)]
    lines: u64,
    /// The most calls in flight `auto` may adapt to (and the largest fixed
    /// concurrency tried).
    #[arg(long, default_value_t = 256)]
    max: usize,
}

/// One run's figures.
#[derive(Debug)]
struct Run {
    name: String,
    per_s: f64,
    unavailable_share: f64,
    dead: u64,
    limit_mean: f64,
    limit_last: usize,
}

/// Delivers `lines` users to a fresh receiver with `concurrency` calls in
/// flight (adaptive up to it when `auto`).
async fn run(args: &Args, concurrency: usize, auto: bool, salt: &str) -> Fallible<Run> {
    let receiver = KneeReceiver::start(args.k, Duration::from_millis(args.service_ms)).await?;
    let mut config = EngineConfig::default();
    config.concurrency = concurrency;
    config.adaptive_concurrency = auto;
    // Every 503 retried until it is delivered: the runs compare time to
    // deliver everyone, not who gives up first.
    config.retry = RetryPolicy::default();
    config.retry.max_attempts = 50;
    config.retry.base_delay = Duration::from_millis(50);
    config.retry.max_delay = Duration::from_secs(1);
    let sink = HttpSink::builder(receiver.url()).build()?;
    let engine = Engine::builder()
        .backend(MemoryBackend::new())
        .sink(sink)
        .config(config)
        .build()?;
    let input = csv_input(args.lines, salt);
    let deliverer = engine.deliverer();
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (deliverer, cancel) = (deliverer.clone(), cancel.clone());
        async move { deliverer.run(cancel).await }
    });
    let start = Instant::now();
    let job = engine.submit(&input).await?.job;
    // The limit, sampled while the job runs.
    let mut limits = Vec::new();
    let report = loop {
        let report = engine
            .wait_for(&job, Some(Duration::from_millis(100)))
            .await?;
        limits.push(deliverer.concurrency_limit());
        if report.is_finished() {
            break report;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    cancel.cancel();
    running.await??;
    let (ok, unavailable) = receiver.answered();
    Ok(Run {
        name: if auto {
            format!("auto (≤ {concurrency})")
        } else {
            format!("fixed {concurrency}")
        },
        per_s: report.delivered as f64 / secs,
        unavailable_share: unavailable as f64 / (ok + unavailable).max(1) as f64,
        dead: report.dead,
        limit_mean: limits.iter().sum::<usize>() as f64 / limits.len().max(1) as f64,
        limit_last: limits.last().copied().unwrap_or(concurrency),
    })
}

#[tokio::main]
async fn main() -> Fallible<()> {
    let args = Args::parse();
    let k = args.k;
    let ideal = k as f64 * 1000.0 / args.service_ms as f64;
    println!(
        "receiver: {k} at once in {} ms each (at most {ideal:.0}/s), queues past {k}, \
         503 past {} in flight; {} users per run, one worker",
        args.service_ms,
        4 * k,
        args.lines
    );
    let mut runs = Vec::new();
    let mut fixed: Vec<usize> = vec![k, 2 * k, args.max];
    fixed.dedup();
    for (i, c) in fixed.iter().enumerate() {
        runs.push(run(&args, *c, false, &format!("fixed-{i}")).await?);
    }
    let auto = run(&args, args.max, true, "auto").await?;
    let best_fixed = runs.iter().map(|r| r.per_s).fold(0.0, f64::max);
    runs.push(auto);

    println!();
    println!(
        "| concurrency | delivered/s | of best fixed | 503 share | dead | limit (mean, last) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {:.0} | {:.0}% | {:.2}% | {} | {:.0}, {} |",
            r.name,
            r.per_s,
            100.0 * r.per_s / best_fixed,
            100.0 * r.unavailable_share,
            r.dead,
            r.limit_mean,
            r.limit_last
        );
    }
    let auto = &runs[runs.len() - 1];
    let wide = &runs[runs.len() - 2];
    let checks = [
        (
            format!(
                "auto ≥ 90% of the best fixed ({:.0}%)",
                100.0 * auto.per_s / best_fixed
            ),
            auto.per_s >= 0.9 * best_fixed,
        ),
        (
            format!("auto < 1% 503s ({:.2}%)", 100.0 * auto.unavailable_share),
            auto.unavailable_share < 0.01,
        ),
        (
            format!(
                "{} meets 503s ({:.2}%)",
                wide.name,
                100.0 * wide.unavailable_share
            ),
            wide.unavailable_share > 0.0,
        ),
    ];
    println!();
    for (what, met) in &checks {
        println!("{} {what}", if *met { "met:   " } else { "MISSED:" });
    }
    Ok(())
}
