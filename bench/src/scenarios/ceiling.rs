//! Scenario 1, `ceiling`: a bare reqwest loop posting the same bodies to the
//! same receiver at the same concurrency, in a process of its own like a
//! worker: the most this machine can do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinSet;
use wds_core::{JobId, Message, Sink};
use wds_http::signature::{self, Secret};
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
        let spec = LoopSpec {
            client: Client::Reqwest,
            sign: false,
            threads: 0,
        };
        let run = self.run_loop(spec, &url).await?;
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
    /// `--lines` requests at `--concurrency`, as `spec` says.
    pub(crate) async fn run_loop(&mut self, spec: LoopSpec, url: &str) -> Fallible<LoopRun> {
        let c = self.args.concurrency;
        let n = self.args.lines;
        let name = self.next_name("loop");
        let client_name = match spec.client {
            Client::Reqwest => "reqwest",
            Client::Hyper => "hyper",
            Client::Sink => "sink",
        };
        let output = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--bare-loop", url, "--lines", &n.to_string()])
            .args(["--concurrency", &c.to_string(), "--bare-job", &name])
            .args(["--bare-client", client_name])
            .args(spec.sign.then_some("--bare-sign"))
            .args(["--bare-threads", &spec.threads.to_string()])
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
    /// The product's `HttpSink` (reqwest), called directly: the sink's
    /// cost without the engine around it.
    Sink,
}

/// What a bare loop measured: requests/s, and the CPU seconds its process
/// spent on them.
pub(crate) struct LoopRun {
    pub(crate) rate: f64,
    pub(crate) cpu_secs: f64,
}

/// One webhook's body and headers, as `HttpSink` sends them.
struct Webhook {
    body: Vec<u8>,
    id: String,
    timestamp: String,
    /// `webhook-signature`, when the loop signs.
    signature: Option<String>,
}

impl Webhook {
    /// The webhook of `message`, signed with `secret` when there is one.
    fn new(message: &Message, secret: Option<&Secret>) -> Result<Self, String> {
        let body = HttpSink::body(message).map_err(|e| e.to_string())?;
        let timestamp = signature::unix_seconds(SystemTime::now()).to_string();
        let id = message.id.to_string();
        let signature =
            secret.map(|s| signature::sign(std::slice::from_ref(s), &id, &timestamp, &body));
        Ok(Webhook {
            body,
            id,
            timestamp,
            signature,
        })
    }
}

/// How a bare loop runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoopSpec {
    pub(crate) client: Client,
    /// Each request signed as `HttpSink` does with one secret.
    pub(crate) sign: bool,
    /// 0: one multi-threaded runtime (tokio's default), like a plain
    /// program; N: N threads, each with a current-thread runtime, its own
    /// client and its share of the concurrency, like WDS's delivery
    /// threads.
    pub(crate) threads: usize,
}

/// The `--bare-loop` process: a warm-up of a tenth of `n` (connections,
/// allocator), then `n` requests of `job` at `concurrency`, measured.
pub(crate) fn bare_loop_process(
    spec: LoopSpec,
    url: &str,
    job: &str,
    n: u64,
    concurrency: usize,
) -> Fallible<LoopRun> {
    if spec.threads == 0 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(async {
            let warmup = format!("{job}-warmup");
            bare_loop(spec, url, &warmup, (n / 10).max(1), concurrency).await?;
            bare_loop(spec, url, job, n, concurrency).await
        });
    }
    let mut config = wds_core::EngineConfig::default();
    config.concurrency = concurrency;
    let shares = config.split(spec.threads);
    let per_thread = n / shares.len() as u64;
    // Every thread warms up, then all start measuring together.
    let warm = Arc::new(std::sync::Barrier::new(shares.len() + 1));
    let threads: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let (url, warm) = (url.to_string(), warm.clone());
            let (job, calls) = (format!("{job}-{i}"), share.concurrency);
            std::thread::spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let warmup = format!("{job}-warmup");
                    let warmed =
                        bare_loop(spec, &url, &warmup, (per_thread / 10).max(1), calls).await;
                    warm.wait();
                    warmed.map_err(|e| e.to_string())?;
                    bare_loop(spec, &url, &job, per_thread, calls)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            })
        })
        .collect();
    warm.wait();
    let cpu = wds_core::testkit::bench::process_cpu();
    let started = Instant::now();
    for thread in threads {
        thread.join().map_err(|_| "a loop thread panicked")??;
    }
    let sent = per_thread * shares.len() as u64;
    Ok(LoopRun {
        rate: sent as f64 / started.elapsed().as_secs_f64(),
        cpu_secs: wds_core::testkit::bench::process_cpu() - cpu,
    })
}

/// Posts `n` webhooks with `concurrency` tasks through one client, each
/// signed with a secret of this run's own when `spec.sign` (as `HttpSink`
/// with one secret); every request must be accepted.
async fn bare_loop(
    spec: LoopSpec,
    url: &str,
    job: &str,
    n: u64,
    concurrency: usize,
) -> Fallible<LoopRun> {
    let plan = Plan {
        job: JobId::new(job),
        n,
        concurrency,
        secret: match spec.sign {
            true => Some(Arc::new(Secret::generate()?)),
            false => None,
        },
    };
    let cpu = wds_core::testkit::bench::process_cpu();
    let started = Instant::now();
    match spec.client {
        Client::Reqwest => reqwest_loop(url, plan).await?,
        Client::Hyper => hyper_loop(url, plan).await?,
        Client::Sink => sink_loop(url, plan).await?,
    }
    Ok(LoopRun {
        rate: n as f64 / started.elapsed().as_secs_f64(),
        cpu_secs: wds_core::testkit::bench::process_cpu() - cpu,
    })
}

/// What a bare loop posts: webhooks `1..=n` of `job`, `concurrency` at a
/// time, signed with `secret` when there is one.
struct Plan {
    job: JobId,
    n: u64,
    concurrency: usize,
    secret: Option<Arc<Secret>>,
}

/// Runs `plan.concurrency` tasks that post the plan's messages in turn
/// with `post` (given the plan's secret), until every one is accepted or
/// one fails.
async fn run_tasks<F, Fut>(plan: Plan, post: F) -> Fallible<()>
where
    F: Fn(Message, Option<&Secret>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let Plan {
        job,
        n,
        concurrency,
        secret,
    } = plan;
    let next = Arc::new(AtomicUsize::new(1));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (post, next, job, secret) = (post.clone(), next.clone(), job.clone(), secret.clone());
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
                    format!("{job}: your order #{i} has shipped"),
                );
                post(message, secret.as_deref()).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn reqwest_loop(url: &str, plan: Plan) -> Fallible<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = reqwest::Url::parse(url)?;
    run_tasks(plan, move |message, secret| {
        let webhook = Webhook::new(&message, secret);
        let (client, url) = (client.clone(), url.clone());
        async move {
            let webhook = webhook?;
            let mut request = client
                .post(url)
                .header("content-type", "application/json")
                .header(wds_http::WEBHOOK_ID, webhook.id)
                .header(wds_http::WEBHOOK_TIMESTAMP, webhook.timestamp);
            if let Some(signature) = webhook.signature {
                request = request.header(wds_http::WEBHOOK_SIGNATURE, signature);
            }
            let response = request
                .body(webhook.body)
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

async fn hyper_loop(url: &str, plan: Plan) -> Fallible<()> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: hyper::Uri = url.parse()?;
    run_tasks(plan, move |message, secret| {
        let webhook = Webhook::new(&message, secret);
        let (client, uri) = (client.clone(), uri.clone());
        async move {
            let webhook = webhook?;
            let mut request = hyper::Request::post(uri)
                .header("content-type", "application/json")
                .header(wds_http::WEBHOOK_ID, webhook.id)
                .header(wds_http::WEBHOOK_TIMESTAMP, webhook.timestamp);
            if let Some(signature) = webhook.signature {
                request = request.header(wds_http::WEBHOOK_SIGNATURE, signature);
            }
            let request = request
                .body(Full::new(Bytes::from(webhook.body)))
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

/// The product's sink called in a loop, signing with the plan's secret.
async fn sink_loop(url: &str, plan: Plan) -> Fallible<()> {
    let mut builder = HttpSink::builder(url);
    if let Some(secret) = &plan.secret {
        builder = builder.secret(secret.to_whsec());
    }
    let sink = Arc::new(builder.build()?);
    // The sink signs with its own copy of the secret.
    run_tasks(plan, move |message, _| {
        let sink = sink.clone();
        async move {
            match Sink::deliver(&*sink, &message).await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("the sink failed: {e}")),
            }
        }
    })
    .await
}
