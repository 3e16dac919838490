//! Quick start: generate a file of users, run the engine on the in-memory
//! backend, and print the job report.
//!
//! ```text
//! cargo run --release --example quickstart -- [ROWS]
//! ```
//!
//! The sink here appends each alert to `./wds-data/outbox/alerts.csv`, a
//! stand-in for the webhook until the HTTP sink is plugged in.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wds_core::{backend::OffsetStore, Delivered, Engine, Input, Message, Sink, SinkError};
use wds_memory::MemoryBackend;

/// Appends `userId,alertMessage` lines to a file.
#[derive(Debug)]
struct CsvFileSink {
    out: Mutex<std::io::BufWriter<std::fs::File>>,
}

#[async_trait]
impl Sink for CsvFileSink {
    async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| SinkError::retryable("poisoned"))?;
        writeln!(out, "{},{}", m.user_id, m.alert_message)
            .map_err(|e| SinkError::retryable(format!("cannot append: {e}")).with_source(e))?;
        Ok(Delivered::default())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: usize = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("ROWS must be a number, got {s:?}"))?,
        None => 100_000,
    };
    let inbox = std::path::Path::new("wds-data/inbox");
    let outbox = std::path::Path::new("wds-data/outbox");
    std::fs::create_dir_all(inbox)?;
    std::fs::create_dir_all(outbox)?;

    // A fresh file each run (the time makes its content, and so its job, new).
    let stamp = wds_core::backend::now_ms();
    let path = inbox.join(format!("users-{stamp}.csv"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(file, "userId,alertMessage")?;
    for i in 1..=rows {
        writeln!(file, "user-{i},Your order {stamp}-{i} has shipped")?;
    }
    file.flush()?;
    drop(file);
    println!("wrote {rows} users to {}", path.display());

    let out_path = outbox.join(format!("alerts-{stamp}.csv"));
    let sink = CsvFileSink {
        out: Mutex::new(std::io::BufWriter::new(std::fs::File::create(&out_path)?)),
    };
    let backend = MemoryBackend::new();
    let engine = Engine::builder()
        .backend(backend.clone())
        .sink(sink)
        .build()?;
    let input = Input::from_file(&path)?;

    let started = Instant::now();
    let progress = {
        let backend = backend.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(reports) = backend.reports().await {
                    if let Some(r) = reports.first() {
                        println!("  read {:>8}  delivered {:>8}", r.lines, r.delivered);
                    }
                }
            }
        })
    };
    let report = engine.run_once(&input).await?;
    progress.abort();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "job {} done: lines {} delivered {} dead {} invalid {} duplicate {} in {:.2}s ({:.0} deliveries/s)",
        report.job,
        report.lines,
        report.delivered,
        report.dead,
        report.invalid,
        report.duplicate,
        secs,
        report.delivered as f64 / secs
    );
    println!("alerts written to {}", out_path.display());
    if report.accounted() != report.lines {
        return Err(format!(
            "{} lines unaccounted for",
            report.lines - report.accounted()
        )
        .into());
    }
    Ok(())
}
