//! Throughput of the engine over the SQLite backend, next to the in-memory
//! one, and what the database holds per line afterwards.
//!
//! ```text
//! cargo run --release -p wds-sqlite --example sqlite_bench [lines] [dir]
//! ```
//!
//! Pushes one job of `lines` (default 100,000) lines through
//! `Engine::run_once` with a sink that does nothing, first on
//! `wds_memory::MemoryBackend`, then on `SqliteBackend` (a new database in
//! `dir`, by default a temporary folder under the current one, so on the
//! disk of your data rather than a tmpfs), seven measured rounds each,
//! alternating, and prints messages per second for each (the median and
//! best rounds), their ratio, the CPU per message (SQLite's also for its
//! connection thread alone), and the database's size per delivered line;
//! then one job of `lines` invalid lines, and the database's size per
//! invalid line.
//!
//! Environment: `WDS_BENCH_BATCH` and `WDS_BENCH_CONCURRENCY` set the
//! engine's batch size and concurrency for both runs;
//! `WDS_BENCH_SYNC_FULL=1` runs SQLite with `synchronous=FULL`.

use wds_core::testkit::bench::{
    csv_input, median_and_best, process_cpu, stat_cpu, timed_job, NoopSink,
};
use wds_core::{Engine, EngineConfig, Format, Input};
use wds_memory::MemoryBackend;
use wds_sqlite::SqliteBackend;

/// Measured rounds of each backend, alternating.
const ROUNDS: u64 = 7;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let lines: u64 = match args.next() {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let dir = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir_in(".")?,
    };
    let path = dir.path().join("wds.db");
    let mut config = EngineConfig::default();
    if let Ok(n) = std::env::var("WDS_BENCH_BATCH") {
        config.batch_size = n.parse()?;
    }
    if let Ok(n) = std::env::var("WDS_BENCH_CONCURRENCY") {
        config.concurrency = n.parse()?;
    }
    let full = std::env::var_os("WDS_BENCH_SYNC_FULL").is_some();
    println!(
        "{lines} lines, noop sink; engine: concurrency {}, batch size {}; database {} (synchronous={})",
        config.concurrency,
        config.batch_size,
        path.display(),
        if full { "FULL" } else { "NORMAL" }
    );
    let memory = Engine::builder()
        .config(config.clone())
        .backend(MemoryBackend::default())
        .sink(NoopSink)
        .build()?;
    let backend = SqliteBackend::builder(&path)
        .synchronous_full(full)
        .open()
        .await?;
    let sqlite = Engine::builder()
        .config(config)
        .backend(backend.clone())
        .sink(NoopSink)
        .build()?;
    timed_job(&memory, &csv_input(lines / 10, "warm-memory")).await?;
    timed_job(&sqlite, &csv_input(lines / 10, "warm-sqlite")).await?;
    let warm = backend.storage().await?;
    let (mut memory_secs, mut sqlite_secs) = (Vec::new(), Vec::new());
    let (mut memory_cpu, mut sqlite_cpu, mut thread_cpu) = (0.0, 0.0, 0.0);
    for round in 0..ROUNDS {
        let memory_input = csv_input(lines, &format!("memory-{round}"));
        let sqlite_input = csv_input(lines, &format!("sqlite-{round}"));
        let cpu = process_cpu();
        let (_, m) = timed_job(&memory, &memory_input).await?;
        memory_cpu += process_cpu() - cpu;
        let (cpu, thread) = (process_cpu(), connection_thread_cpu());
        let (_, s) = timed_job(&sqlite, &sqlite_input).await?;
        sqlite_cpu += process_cpu() - cpu;
        thread_cpu += connection_thread_cpu() - thread;
        println!("round {round}: memory {m:.3} s, sqlite {s:.3} s");
        memory_secs.push(m);
        sqlite_secs.push(s);
    }
    let (memory_median, memory_best) = median_and_best(&mut memory_secs);
    let (sqlite_median, sqlite_best) = median_and_best(&mut sqlite_secs);
    let rate = |secs: f64| lines as f64 / secs;
    for (name, median, best) in [
        ("memory", memory_median, memory_best),
        ("sqlite", sqlite_median, sqlite_best),
    ] {
        println!(
            "{name:<7} {median:>6.3} s  {:>8.0} messages/s (median of {ROUNDS}; best {:.0}/s)",
            rate(median),
            rate(best)
        );
    }
    println!(
        "ratio sqlite/memory: {:.0}% (target >= 50%; of the best rounds: {:.0}%)",
        100.0 * memory_median / sqlite_median,
        100.0 * memory_best / sqlite_best
    );
    let measured = lines * ROUNDS;
    println!(
        "CPU per message (this process, all threads): memory {:.2} us; sqlite {:.2} us \
         (of which its connection thread {:.2} us)",
        memory_cpu * 1e6 / measured as f64,
        sqlite_cpu * 1e6 / measured as f64,
        thread_cpu * 1e6 / measured as f64
    );
    let after = backend.storage().await?;
    let used = |s: wds_sqlite::Storage| s.file_bytes - s.free_bytes;
    println!(
        "database after {} measured lines: file {} bytes ({} free for reuse), wal {} bytes; \
         in use grew by {:.1} bytes per line (job rows and packed outcomes; the queue is empty)",
        measured,
        after.file_bytes,
        after.free_bytes,
        after.wal_bytes,
        used(after).saturating_sub(used(warm)) as f64 / measured as f64
    );

    // Rejected lines: a job whose every line is invalid (no user id).
    let before = backend.storage().await?;
    let mut csv = String::with_capacity(lines as usize * 12);
    for i in 0..lines {
        csv.push_str(&format!(",message {i}\n"));
    }
    let invalid = Input::from_bytes("bench-invalid.csv", csv.into_bytes()).with_format(Format::Csv);
    let report = sqlite.run_once(&invalid).await?;
    if !report.is_complete() || report.invalid != lines {
        return Err(format!("the invalid job did not complete: {report:?}").into());
    }
    let after_invalid = backend.storage().await?;
    println!(
        "{lines} invalid lines (reason {:?}): in use grew by {:.1} bytes per line",
        sqlite
            .offsets()
            .rejects(&report.job, 1)
            .await?
            .first()
            .map(|r| format!("{:?}", r.kind))
            .unwrap_or_default(),
        used(after_invalid).saturating_sub(used(before)) as f64 / lines as f64
    );
    Ok(())
}

/// CPU seconds used so far by the backend's connection thread (the thread
/// named `wds-sqlite`), from `/proc/self/task/*/stat`; 0 where there is no
/// `/proc`.
fn connection_thread_cpu() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter(|stat| stat.contains("(wds-sqlite)"))
        .map(|stat| stat_cpu(&stat))
        .sum()
}
