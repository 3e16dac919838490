//! Engine benchmark: how fast WDS parses, and how fast messages go through
//! batcher → memory queue → deliverer into a sink that does nothing. Both
//! figures are measured in one run; compare them with an HTTP call rate to
//! see that the engine costs next to nothing.
//!
//! ```text
//! cargo run --release -p wds-memory --example engine_bench -- [LINES]
//! ```
//!
//! It measures `wds-core` (the parser and the engine) and lives here
//! because it runs the engine on the memory backend: a dev-dependency of
//! `wds-core` on `wds-memory` would be a cycle.

use std::io::Cursor;
use std::time::Instant;

use wds_core::parse::{Limits, Position, RecordReader};
use wds_core::testkit::bench::NoopSink;
use wds_core::{Engine, Format, Input};
use wds_memory::MemoryBackend;

fn csv(lines: usize) -> Vec<u8> {
    let mut s = String::with_capacity(lines * 40);
    for i in 0..lines {
        s.push_str(&format!("user-{i},Your order #{i} has shipped\n"));
    }
    s.into_bytes()
}

fn parse_rate(body: &[u8], format: Format) -> f64 {
    let start = Instant::now();
    let mut reader = RecordReader::new(
        Cursor::new(body),
        format,
        None,
        Limits::default(),
        Position::START,
    );
    let mut n = 0u64;
    while let Ok(Some(_)) = reader.next_record() {
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lines: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let body = csv(lines);
    // Warm up, then measure three times and keep the best.
    parse_rate(&body[..body.len() / 10], Format::Csv);
    let parse = (0..3)
        .map(|_| parse_rate(&body, Format::Csv))
        .fold(0.0, f64::max);
    println!("csv parse:                         {parse:>12.0} lines/s");

    let mut best = 0.0f64;
    for round in 0..3 {
        let backend = MemoryBackend::new();
        let engine = Engine::builder()
            .backend(backend)
            .sink(NoopSink)
            .concurrency(256)
            .batch_size(500)
            .build()?;
        let mut unique = body.clone();
        unique.extend_from_slice(format!("round-{round},x\n").as_bytes());
        let input = Input::from_bytes("bench.csv", unique);
        let start = Instant::now();
        let report = engine.run_once(&input).await?;
        let rate = report.delivered as f64 / start.elapsed().as_secs_f64();
        assert_eq!(report.accounted(), report.lines);
        best = best.max(rate);
    }
    println!("batcher → memory queue → no-op sink: {best:>10.0} messages/s");
    println!("engine / parse ratio: {:.2}", best / parse);
    Ok(())
}
