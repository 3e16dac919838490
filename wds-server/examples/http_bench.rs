//! Throughput of `HttpSink` against a bare reqwest loop, over loopback.
//!
//! ```text
//! cargo run --release -p wds-http --example http_bench
//! ```
//!
//! Starts the receiver (no rate limit) on 127.0.0.1, then measures requests/s
//! of (a) a bare reqwest loop posting the same JSON bodies with the same
//! headers and (b) `HttpSink::deliver`, both with C concurrent tasks for N
//! requests; first unsigned, then with a secret on both sides (the bare loop
//! then signs with `signature::sign`, so both pay the same HMAC and the
//! receiver does the same work). Each is run twice, alternating, and the best
//! run counts, to damp the noise of a small shared machine.
//!
//! Environment: `WDS_BENCH_N` (default 50000), `WDS_BENCH_C` (default 64).

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wds_http::signature::{self, Secret};
use wds_http::wds_core::{JobId, Message, Sink};
use wds_http::HttpSink;
use wds_server::{Receiver, ReceiverConfig};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const REPEATS: usize = 2;

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn messages(job: &str, n: usize) -> Arc<Vec<Message>> {
    Arc::new(
        (0..n)
            .map(|i| {
                Message::fresh(
                    &JobId::new(job),
                    i as u64 + 1,
                    format!("user{i}"),
                    format!("Alert number {i}: disk almost full, \"act\" now"),
                )
            })
            .collect(),
    )
}

/// Runs `concurrency` tasks that each take the next index and call `one`
/// until all messages are sent; returns (requests/s, failures).
async fn drive<F, Fut>(messages: Arc<Vec<Message>>, concurrency: usize, one: F) -> (f64, usize)
where
    F: Fn(Message) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (messages, next, failures, one) = (
            Arc::clone(&messages),
            Arc::clone(&next),
            Arc::clone(&failures),
            one.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(m) = messages.get(i) else { break };
                if !one(m.clone()).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    (rate, failures.load(Ordering::Relaxed))
}

/// The bare loop: reqwest, the same body and headers, nothing else.
async fn bare(
    url: &str,
    secret: Option<&Secret>,
    messages: Arc<Vec<Message>>,
    concurrency: usize,
) -> BoxResult<(f64, usize)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = reqwest::Url::parse(url)?;
    let secrets: Arc<[Secret]> = secret.cloned().into_iter().collect();
    Ok(drive(messages, concurrency, move |m: Message| {
        let (client, url, secrets) = (client.clone(), url.clone(), Arc::clone(&secrets));
        async move {
            let body = serde_json::to_vec(&serde_json::json!({
                "userId": m.user_id, "alertMessage": m.alert_message,
            }))
            .unwrap_or_default();
            let id = m.id.to_string();
            let ts = signature::unix_seconds(SystemTime::now()).to_string();
            let mut request = client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", &ts);
            if !secrets.is_empty() {
                request = request.header(
                    "webhook-signature",
                    signature::sign(&secrets, &id, &ts, &body),
                );
            }
            match request.body(body).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await)
}

async fn through_sink(
    sink: &HttpSink,
    messages: Arc<Vec<Message>>,
    concurrency: usize,
) -> (f64, usize) {
    let sink = sink.clone();
    drive(messages, concurrency, move |m: Message| {
        let sink = sink.clone();
        async move { sink.deliver(&m).await.is_ok() }
    })
    .await
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let n = env_usize("WDS_BENCH_N", 50_000);
    let c = env_usize("WDS_BENCH_C", 64);
    let dir = tempfile::tempdir()?;
    println!("http_bench: N={n} requests per run, C={c} concurrent, best of {REPEATS}");
    println!(
        "{:<9} {:>12} {:>12} {:>7}",
        "receiver", "bare req/s", "sink req/s", "ratio"
    );
    for signed in [false, true] {
        let label = if signed { "signed" } else { "unsigned" };
        let mut config = ReceiverConfig::new(dir.path().join(format!("{label}.csv")));
        if signed {
            config.secrets = vec![SECRET.into()];
        } else {
            config.accept_unsigned = true;
        }
        let receiver = Receiver::new(config)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/webhook", listener.local_addr()?);
        let stop = CancellationToken::new();
        let server = {
            let (receiver, shutdown) = (receiver.clone(), stop.clone().cancelled_owned());
            tokio::spawn(async move { receiver.serve(listener, shutdown).await })
        };
        let secret: Option<Secret> = if signed { Some(SECRET.parse()?) } else { None };
        let mut builder = HttpSink::builder(&url);
        if signed {
            builder = builder.secret(SECRET);
        }
        let sink = builder.build()?;

        // Warm up both paths (connections, allocator, page cache).
        let warm = (n / 10).max(1);
        bare(
            &url,
            secret.as_ref(),
            messages(&format!("{label}-warm-bare"), warm),
            c,
        )
        .await?;
        through_sink(&sink, messages(&format!("{label}-warm-sink"), warm), c).await;

        let (mut best_bare, mut best_sink, mut failures) = (0f64, 0f64, 0);
        for rep in 0..REPEATS {
            let (rate, failed) = bare(
                &url,
                secret.as_ref(),
                messages(&format!("{label}-bare-{rep}"), n),
                c,
            )
            .await?;
            best_bare = best_bare.max(rate);
            failures += failed;
            let (rate, failed) =
                through_sink(&sink, messages(&format!("{label}-sink-{rep}"), n), c).await;
            best_sink = best_sink.max(rate);
            failures += failed;
        }
        stop.cancel();
        server.await??;
        let sent = 2 * warm + 2 * REPEATS * n;
        println!(
            "{label:<9} {best_bare:>12.0} {best_sink:>12.0} {:>6.1}%",
            100.0 * best_sink / best_bare
        );
        if failures > 0 || receiver.accepted() != sent as u64 || receiver.duplicates() != 0 {
            return Err(format!(
                "{label}: {failures} failed requests; receiver accepted {} of {sent}, {} duplicates",
                receiver.accepted(),
                receiver.duplicates()
            )
            .into());
        }
    }
    println!("every request was accepted and recorded exactly once");
    Ok(())
}
