//! Scenario 1, `ceiling`: a bare reqwest loop posting the same bodies to the
//! same receiver at the same concurrency, in a process of its own like a
//! worker: the most this machine can do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;
use wds_core::{JobId, Message};
use wds_http::HttpSink;

use crate::table::Target;
use crate::{Bench, Fallible};

impl Bench {
    /// Scenario 1: The bare reqwest loop: the same bodies and headers as `HttpSink`,
    /// the same receiver, the same concurrency, in a process of its own like
    /// the workers (this binary again, with the hidden `--bare-loop`).
    pub(crate) async fn ceiling(&mut self) -> Fallible<()> {
        eprintln!("[1] ceiling: bare reqwest loop");
        let c = self.args.concurrency;
        let n = self.args.lines;
        let name = self.next_name("ceiling");
        let output = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--bare-loop", &self.receiver.url, "--lines", &n.to_string()])
            .args(["--concurrency", &c.to_string(), "--bare-job", &name])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60 + n / 1_000), output)
            .await
            .map_err(|_| "the bare loop did not finish in time")??;
        if !output.status.success() {
            return Err(format!(
                "the bare loop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let rate: f64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
        self.ceiling = Some(rate);
        self.table.add(
            "1 ceiling",
            &format!("bare reqwest, own process, {n} requests, concurrency {c}"),
            rate,
            format!("{rate:.0} req/s"),
            Target::None,
        );
        Ok(())
    }
}

/// Posts `n` webhooks with `concurrency` tasks through one reqwest client;
/// returns requests/s. Every request must be accepted.
pub(crate) async fn bare_loop(url: &str, job: &str, n: u64, concurrency: usize) -> Fallible<f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = reqwest::Url::parse(url)?;
    let next = Arc::new(AtomicUsize::new(1));
    let job = JobId::new(job);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next, job) = (client.clone(), url.clone(), next.clone(), job.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i > n {
                    return Ok::<_, String>(());
                }
                let message = Message::fresh(
                    &job,
                    i + 1,
                    format!("user-{i}"),
                    format!("{}: your order #{i} has shipped", job),
                );
                let body = HttpSink::body(&message).map_err(|e| e.to_string())?;
                let ts = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let response = client
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .header(wds_http::WEBHOOK_ID, message.id.to_string())
                    .header(wds_http::WEBHOOK_TIMESTAMP, ts.to_string())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                response.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("the receiver answered {status}"));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
