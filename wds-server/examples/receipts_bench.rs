//! How long "did user X get it" takes without a per-user index: the control
//! API's `GET /jobs/{id}/users/{userId}` finds the job's file in the
//! archive by its identity and reads it again.
//!
//! A job of `--lines` users (default 100,000) is delivered through a no-op
//! sink on the memory backend, its file left in an archive folder; then the
//! API is asked over loopback HTTP about the last user: the first request
//! (which hashes the archive to index it) and then `--repeat` more (which
//! only read the file again), and about one line.
//!
//! ```sh
//! cargo run --release -p wds-server --example receipts_bench -- --lines 100000
//! ```

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use wds_core::testkit::bench::{median_and_best, NoopSink};
use wds_core::{Engine, Input};
use wds_memory::MemoryBackend;
use wds_server::{ControlApi, ControlConfig, Metrics};

#[derive(Parser, Debug)]
struct Args {
    /// Lines of the job's file.
    #[arg(long, default_value_t = 100_000)]
    lines: u64,
    /// Timed requests after the first.
    #[arg(long, default_value_t = 9)]
    repeat: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (inbox, done) = (dir.path().join("inbox"), dir.path().join("done"));
    std::fs::create_dir_all(&inbox)?;
    std::fs::create_dir_all(&done)?;
    let mut csv = String::with_capacity(args.lines as usize * 40);
    for i in 1..=args.lines {
        csv.push_str(&format!("user-{i:07},Your alert number {i}\n"));
    }
    let file = done.join("users.csv");
    std::fs::write(&file, &csv)?;
    let bytes = csv.len();

    let backend = MemoryBackend::new();
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(Arc::new(NoopSink))
        .build()?;
    let report = engine
        .run_once(&Input::from_bytes("users.csv", csv.into_bytes()))
        .await?;
    let job = report.job.to_string();

    let api = ControlApi::new(
        Arc::new(backend.clone()),
        Arc::new(backend),
        Arc::new(Metrics::new()),
        ControlConfig::new(&inbox).archive(&done),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { api.serve(listener, stop).await }
    });
    let client = reqwest::Client::new();
    let timed = |path: String| {
        let client = client.clone();
        async move {
            let start = Instant::now();
            let resp = client.get(format!("http://{addr}{path}")).send().await?;
            let status = resp.status();
            let body = resp.text().await?;
            if !status.is_success() {
                return Err(format!("{path}: {status} {body}").into());
            }
            Ok::<f64, Box<dyn std::error::Error>>(start.elapsed().as_secs_f64() * 1000.0)
        }
    };

    let last = format!("/jobs/{job}/users/user-{:07}", args.lines);
    let first = timed(last.clone()).await?;
    let mut scans = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat.max(1) {
        scans.push(timed(last.clone()).await?);
    }
    let mut lines = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat.max(1) {
        lines.push(timed(format!("/jobs/{job}/lines/{}", args.lines)).await?);
    }
    let (scan_median, scan_best) = median_and_best(&mut scans);
    let (line_median, _) = median_and_best(&mut lines);
    println!(
        "file: {} lines, {:.1} MB, in the archive",
        args.lines,
        bytes as f64 / 1e6
    );
    println!("GET users/{{last user}}, first (hash to index + scan): {first:.1} ms");
    println!(
        "GET users/{{last user}}, indexed (scan only): median {scan_median:.1} ms, best {scan_best:.1} ms over {} requests",
        scans.len()
    );
    println!(
        "GET lines/{{n}} (stored outcome, no scan): median {line_median:.2} ms over {} requests",
        lines.len()
    );
    stop.cancel();
    Ok(())
}
