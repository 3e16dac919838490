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
        let url = self.receiver.url.clone();
        let run = self.run_loop(Client::Reqwest, &url).await?;
        let rate = run.rate;
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

    /// Runs a bare loop of `client` against `url` in a process of its own
    /// (this binary again, with the hidden `--bare-loop`): warm-up, then
    /// `--lines` requests at `--concurrency`.
    pub(crate) async fn run_loop(&mut self, client: Client, url: &str) -> Fallible<LoopRun> {
        let c = self.args.concurrency;
        let n = self.args.lines;
        let name = self.next_name("loop");
        let client_name = match client {
            Client::Reqwest => "reqwest",
            Client::Hyper => "hyper",
        };
        let output = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--bare-loop", url, "--lines", &n.to_string()])
            .args(["--concurrency", &c.to_string(), "--bare-job", &name])
            .args(["--bare-client", client_name])
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
        let text = String::from_utf8_lossy(&output.stdout);
        let mut figures = text.split_whitespace().map(str::parse::<f64>);
        match (figures.next(), figures.next()) {
            (Some(Ok(rate)), Some(Ok(cpu_secs))) => Ok(LoopRun { rate, cpu_secs }),
            _ => Err(format!("the bare loop printed {text:?}").into()),
        }
    }
}

/// The HTTP client of a bare loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Client {
    /// reqwest, as `HttpSink` uses.
    Reqwest,
    /// hyper's own pooled client (`hyper_util::client::legacy`), without
    /// reqwest's layers.
    Hyper,
}

/// What a bare loop measured: requests/s, and the CPU seconds its process
/// spent on them.
pub(crate) struct LoopRun {
    pub(crate) rate: f64,
    pub(crate) cpu_secs: f64,
}

/// One webhook's body and headers, as `HttpSink` sends them.
fn webhook(job: &JobId, i: u64) -> Result<(Vec<u8>, String, String), String> {
    let message = Message::fresh(
        job,
        i + 1,
        format!("user-{i}"),
        format!("{job}: your order #{i} has shipped"),
    );
    let body = HttpSink::body(&message).map_err(|e| e.to_string())?;
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok((body, message.id.to_string(), ts.to_string()))
}

/// Posts `n` webhooks with `concurrency` tasks through one `client`;
/// every request must be accepted.
pub(crate) async fn bare_loop(
    client: Client,
    url: &str,
    job: &str,
    n: u64,
    concurrency: usize,
) -> Fallible<LoopRun> {
    let cpu = wds_core::testkit::bench::process_cpu();
    let started = Instant::now();
    match client {
        Client::Reqwest => reqwest_loop(url, job, n, concurrency).await?,
        Client::Hyper => hyper_loop(url, job, n, concurrency).await?,
    }
    Ok(LoopRun {
        rate: n as f64 / started.elapsed().as_secs_f64(),
        cpu_secs: wds_core::testkit::bench::process_cpu() - cpu,
    })
}

/// Runs `concurrency` tasks that post webhooks `1..=n` of `job` in turn
/// with `post`, until every one is accepted or one fails.
async fn run_tasks<F, Fut>(job: &str, n: u64, concurrency: usize, post: F) -> Fallible<()>
where
    F: Fn(Vec<u8>, String, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(1));
    let job = JobId::new(job);
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (post, next, job) = (post.clone(), next.clone(), job.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i > n {
                    return Ok::<_, String>(());
                }
                let (body, id, ts) = webhook(&job, i)?;
                post(body, id, ts).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn reqwest_loop(url: &str, job: &str, n: u64, concurrency: usize) -> Fallible<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = reqwest::Url::parse(url)?;
    run_tasks(job, n, concurrency, move |body, id, ts| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header(wds_http::WEBHOOK_ID, id)
                .header(wds_http::WEBHOOK_TIMESTAMP, ts)
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            response.bytes().await.map_err(|e| e.to_string())?;
            match status.is_success() {
                true => Ok(()),
                false => Err(format!("the receiver answered {status}")),
            }
        }
    })
    .await
}

async fn hyper_loop(url: &str, job: &str, n: u64, concurrency: usize) -> Fallible<()> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: hyper::Uri = url.parse()?;
    run_tasks(job, n, concurrency, move |body, id, ts| {
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            let request = hyper::Request::post(uri)
                .header("content-type", "application/json")
                .header(wds_http::WEBHOOK_ID, id)
                .header(wds_http::WEBHOOK_TIMESTAMP, ts)
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let status = response.status();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            match status.is_success() {
                true => Ok(()),
                false => Err(format!("the receiver answered {status}")),
            }
        }
    })
    .await
}
