//! What a job costs its backend per line, once done: the memory backend's
//! resident memory, the SQLite database's pages in use and Redis's
//! `used_memory`, for a file of invalid lines and for a file of valid
//! (delivered) lines. Prints one table.
//!
//! ```text
//! cargo run --release -p wds-bench --example storage_bench        # 10M invalid and 1M valid lines, on each backend
//! cargo run --release -p wds-bench --example storage_bench -- --invalid 1000000 --sqlite-invalid 1000000 --redis-invalid 1000000
//! ```
//!
//! The memory figure is the growth of this process's resident set (it never
//! shrinks on its own, so the parser's and the batcher's buffers count too:
//! an upper bound). The SQLite figure is the growth of a new database's
//! pages in use (`page_count - freelist_count`, the write-ahead log
//! included), the job finished. The Redis figure is `used_memory` of a
//! private `redis-server` before and after, the job finished.
//!
//! It compares the three backends side by side, so it lives with the
//! benchmark (`wds-bench`) rather than in one backend's crate.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use wds_core::backend::Backend;
use wds_core::testkit::bench::NoopSink;
use wds_core::{Engine, EngineConfig, Input};
use wds_harness::process::status_kb;
use wds_harness::redis::{RedisAdmin, RedisServer};
use wds_memory::MemoryBackend;
use wds_redis::RedisBackend;
use wds_sqlite::SqliteBackend;

/// A failure of the benchmark itself.
pub(crate) type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Bytes per line that a backend keeps for a finished job.
#[derive(Debug, Parser)]
struct Args {
    /// Invalid (one-character) lines for the memory backend.
    #[arg(long, default_value_t = 10_000_000)]
    invalid: u64,
    /// Valid lines, all delivered, for the memory backend.
    #[arg(long, default_value_t = 1_000_000)]
    valid: u64,
    /// Invalid lines for SQLite.
    #[arg(long, default_value_t = 10_000_000)]
    sqlite_invalid: u64,
    /// Valid lines, all delivered, for SQLite.
    #[arg(long, default_value_t = 1_000_000)]
    sqlite_valid: u64,
    /// Invalid lines for Redis.
    #[arg(long, default_value_t = 10_000_000)]
    redis_invalid: u64,
    /// Valid lines, all delivered, for Redis.
    #[arg(long, default_value_t = 1_000_000)]
    redis_valid: u64,
}

/// A file of `lines` lines in `dir`: `x` (invalid: a user without a message
/// and no default) or `user-N,hi` (valid, all distinct).
fn write_file(dir: &Path, name: &str, lines: u64, valid: bool) -> Fallible<Input> {
    use std::io::Write;
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for i in 0..lines {
        if valid {
            writeln!(out, "user-{i},hi")?;
        } else {
            out.write_all(b"x\n")?;
        }
    }
    out.flush()?;
    drop(out);
    Ok(Input::from_file(&path)?)
}

/// This process's resident set, in bytes.
fn rss() -> Fallible<u64> {
    let kb = status_kb("self", "VmRSS:").ok_or("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

/// Runs `input` to the end on a backend; returns the report's line count.
async fn run(backend: impl Backend, input: &Input) -> Fallible<u64> {
    let mut config = EngineConfig::default();
    config.batch_size = 1000;
    config.concurrency = 256;
    let engine = Engine::builder()
        .backend(backend)
        .sink(NoopSink)
        .config(config)
        .build()?;
    let report = engine.run_once(input).await?;
    if report.accounted() != report.lines {
        return Err(format!("the job did not add up: {report:?}").into());
    }
    Ok(report.lines)
}

fn row(backend: &str, kind: &str, lines: u64, bytes: u64, took: Duration) {
    println!(
        "| {backend:<6} | {kind:<7} | {lines:>11} | {:>12} | {:>9.2} | {:>6.1} s |",
        bytes,
        bytes as f64 / lines.max(1) as f64,
        took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> Fallible<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    println!("| backend | lines   | count       | bytes kept   | per line  | took     |");
    println!("|---------|---------|-------------|--------------|-----------|----------|");

    for (kind, lines, valid) in [
        ("invalid", args.invalid, false),
        ("valid", args.valid, true),
    ] {
        let input = write_file(dir.path(), &format!("mem-{kind}.csv"), lines, valid)?;
        let backend = MemoryBackend::new();
        let before = rss()?;
        let start = Instant::now();
        let counted = run(backend.clone(), &input).await?;
        let after = rss()?;
        row(
            "memory",
            kind,
            counted,
            after.saturating_sub(before),
            start.elapsed(),
        );
        // Kept alive until measured: the job's state is what is measured.
        drop(backend);
    }

    for (kind, lines, valid) in [
        ("invalid", args.sqlite_invalid, false),
        ("valid", args.sqlite_valid, true),
    ] {
        let input = write_file(dir.path(), &format!("sqlite-{kind}.csv"), lines, valid)?;
        let backend = SqliteBackend::open(dir.path().join(format!("sqlite-{kind}.db"))).await?;
        let used = |s: wds_sqlite::Storage| s.file_bytes - s.free_bytes;
        let before = used(backend.storage().await?);
        let start = Instant::now();
        let counted = run(backend.clone(), &input).await?;
        let after = used(backend.storage().await?);
        row(
            "sqlite",
            kind,
            counted,
            after.saturating_sub(before),
            start.elapsed(),
        );
    }

    let server = RedisServer::builder().start();
    let mut admin = RedisAdmin::connect(&server.url()).await?;
    for (kind, lines, valid) in [
        ("invalid", args.redis_invalid, false),
        ("valid", args.redis_valid, true),
    ] {
        let input = write_file(dir.path(), &format!("redis-{kind}.csv"), lines, valid)?;
        let backend = RedisBackend::builder(server.url())
            .prefix(format!("bench-{kind}"))
            .connect()
            .await?;
        let before = admin.memory("used_memory").await?;
        let start = Instant::now();
        let counted = run(backend, &input).await?;
        let after = admin.memory("used_memory").await?;
        row(
            "redis",
            kind,
            counted,
            after.saturating_sub(before),
            start.elapsed(),
        );
    }
    Ok(())
}
