//! A custom `Sink`: deliver alerts somewhere other than a webhook — here, a
//! JSON Lines file standing in for Slack, SMS or a message bus.
//!
//! `cargo run --example custom_sink` — prints the job report.

use std::io::Write;
use std::sync::Mutex;

use async_trait::async_trait;
use wds_core::{Delivered, Engine, Input, Message, Sink, SinkError};
use wds_memory::MemoryBackend;

/// Appends one JSON object per alert to a file.
#[derive(Debug)]
struct JsonLinesSink(Mutex<std::fs::File>);

#[async_trait]
impl Sink for JsonLinesSink {
    async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
        // Tell the engine what kind of failure this is: it decides on retries.
        if m.user_id.is_empty() {
            return Err(SinkError::permanent("no user"));
        }
        let line =
            serde_json::json!({"id": m.id.to_string(), "user": m.user_id, "text": m.alert_message})
                .to_string()
                + "\n";
        let mut file = self
            .0
            .lock()
            .map_err(|_| SinkError::retryable("lock poisoned"))?;
        file.write_all(line.as_bytes())
            // A full disk may clear up; the io::Error stays the source.
            .map_err(|e| SinkError::retryable(format!("cannot append: {e}")).with_source(e))?;
        Ok(Delivered::default())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all("wds-data/outbox")?;
    let path = "wds-data/outbox/custom_sink.jsonl";
    let sink = JsonLinesSink(Mutex::new(std::fs::File::create(path)?));
    let engine = Engine::builder()
        .backend(MemoryBackend::new())
        .sink(sink)
        .rate_limit(500, 50) // what the real destination allows
        .build()?;
    let users = b"userId,alertMessage\nada,Build passed\ngrace,\"Deploy done, all green\"\nada,Build passed\n";
    let input = Input::from_bytes("users.csv", users.to_vec());
    let report = engine.run_once(&input).await?;
    println!(
        "{} lines: {} delivered to {path}, {} duplicate, {} invalid, {} dead",
        report.lines, report.delivered, report.duplicate, report.invalid, report.dead
    );
    Ok(())
}
