//! The three services: initiator, worker and notifier.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use wds_core::backend::AnyBackend;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wds_core::backend::CircuitStore;
use wds_core::backend::{WorkerBeat, WorkerRegistry, BEAT_INTERVAL};
use wds_core::engine::DeliveryThreads;
use wds_core::{
    backend::{JobControl, OffsetStore, Queue},
    limiter::Limiter,
    Engine, FolderSource, Source,
};
use wds_http::HttpSink;
use wds_memory::MemoryBackend;
use wds_server::{
    ControlApi, ControlConfig, FlushPolicy, Metrics, Receiver, ReceiverConfig, Resender,
};

use crate::settings::{BackendKind, Settings, Threads};

/// A one-line error for the user; `main` prints it and exits non-zero.
pub(crate) type Fallible<T> = Result<T, String>;

/// The queue, offset store and (shared) limiter every role of a deployment uses.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    /// The one store engines are built on (queue and offsets together).
    pub(crate) store: AnyBackend,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) offsets: Arc<dyn OffsetStore>,
    /// Pause, resume, cancel and replay by reason, for the control API.
    pub(crate) control: Arc<dyn JobControl>,
    /// A limiter shared by every worker (Redis); `None`: one per process.
    pub(crate) limiter: Option<Arc<dyn Limiter>>,
    /// Where the webhook's circuit breaker keeps its state.
    pub(crate) circuits: Arc<dyn CircuitStore>,
    /// Where workers beat, and the control API lists them.
    pub(crate) workers: Arc<dyn WorkerRegistry>,
    pub(crate) name: &'static str,
}

impl Backend {
    pub(crate) fn memory(detail_limit: usize) -> Backend {
        let b = MemoryBackend::with_detail_limit(detail_limit);
        Backend {
            store: Arc::new(b.clone()),
            queue: Arc::new(b.clone()),
            offsets: Arc::new(b.clone()),
            control: Arc::new(b.clone()),
            circuits: Arc::new(b.clone()),
            workers: Arc::new(b),
            limiter: None,
            name: "memory",
        }
    }

    /// The backend the settings ask for (see [`Settings::backend_kind`]).
    pub(crate) async fn connect(settings: &Settings, role: &str) -> Fallible<Backend> {
        let one_process = role == "all" || role == "demo";
        match (settings.backend_kind(), &settings.redis) {
            (BackendKind::Redis, Some(url)) => crate::redis::connect(url, settings).await,
            (BackendKind::Redis, None) => {
                Err("--backend redis needs --redis redis://HOST:PORT (or WDS_REDIS_URL)".into())
            }
            (_, _) if !one_process => Err(format!(
                "the {role} role runs as its own process, so it needs a shared backend: \
                 pass --redis redis://HOST:PORT (or set WDS_REDIS_URL), or run `all`"
            )),
            (BackendKind::Sqlite, _) => crate::sqlite::open(settings).await,
            (BackendKind::Memory, _) => {
                tracing::warn!(
                    "--backend memory: every job lives in this process only; \
                     a restart (or a crash) forgets all of them, delivered or not"
                );
                Ok(Backend::memory(settings.detail_limit))
            }
        }
    }

    /// An engine; with a sink (a worker), also the webhook's circuit breaker.
    fn engine(
        &self,
        settings: &Settings,
        sink: Option<(HttpSink, &str)>,
        metrics: &Arc<Metrics>,
    ) -> Fallible<Engine> {
        let mut builder = Engine::builder()
            .backend(self.store.clone())
            .config(settings.engine_config());
        builder = match sink {
            Some((sink, url)) => builder
                .sink(metrics.wrap(sink))
                .circuit(self.circuits.clone(), endpoint_name(url)),
            // The initiator never delivers; it still needs a sink to build.
            None => builder.sink(NoDelivery),
        };
        // A shared limiter (Redis) carries the rate, if any, and the 429
        // back-off of every worker; otherwise one of this process's own.
        builder = match (&self.limiter, settings.rate) {
            (Some(shared), _) => builder.limiter(shared.clone()),
            (None, Some(rate)) => builder.rate_limit(rate, settings.burst.max(1)),
            (None, None) => builder,
        };
        builder.build().map_err(|e| e.to_string())
    }
}

/// The name the webhook's circuit goes by in the backend: its URL without
/// a password or query (it names a key, and shows in `/metrics`).
pub(crate) fn endpoint_name(url: &str) -> String {
    wds_http::redact_url(url)
}

/// The initiator's engine only reads files; it never calls a sink.
#[derive(Debug)]
struct NoDelivery;

#[async_trait::async_trait]
impl wds_core::Sink for NoDelivery {
    async fn deliver(
        &self,
        _: &wds_core::Message,
    ) -> Result<wds_core::Delivered, wds_core::SinkError> {
        Err(wds_core::SinkError::retryable(
            "this process does not deliver",
        ))
    }
}

/// Binds a listener with an error that names the address.
pub(crate) async fn bind(addr: SocketAddr, what: &str) -> Fallible<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for the {what}: {e}"))
}

/// The notifier: the webhook receiver writing its output CSV.
pub(crate) async fn notifier(
    settings: &Settings,
    listener: TcpListener,
    output: std::path::PathBuf,
    cancel: CancellationToken,
) -> Fallible<()> {
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the output folder {}: {e}", dir.display()))?;
    }
    let mut config = ReceiverConfig::new(&output);
    // Write every accepted alert through to the file before answering 200:
    // with a buffer, a notifier killed with SIGKILL lost the alerts it had
    // already acknowledged, which WDS then counts as delivered (G4). One
    // write(2) per alert is far below the cost of the HTTP request.
    config.flush = FlushPolicy::EveryWrite;
    config.secrets = settings.secrets.clone();
    config.accept_unsigned = settings.insecure_accept_unsigned;
    config.limits = settings.server_limits();
    config.rate = settings.notifier_rate.map(|r| (r, settings.burst.max(1)));
    let receiver = Receiver::new(config).map_err(|e| format!("notifier: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, output = %output.display(), "notifier listening");
    receiver
        .serve(listener, cancel.cancelled_owned())
        .await
        .map_err(|e| format!("notifier: {e}"))
}

/// The control API's settings: the token, the upload limits, the server's.
fn control_config(settings: &Settings, inbox: &std::path::Path) -> ControlConfig {
    let mut config = ControlConfig::new(inbox)
        .token(settings.token.clone())
        .archive(settings.archive())
        .archive(settings.rejected());
    config.max_upload_bytes = settings.max_upload_bytes;
    config.max_concurrent_uploads = settings.max_concurrent_uploads;
    config.min_free_disk_bytes = settings.min_free_disk_bytes;
    config.upload_timeout = Duration::from_millis(settings.upload_timeout_ms);
    config.limits = settings.server_limits();
    config
}

/// A client for `url` that signs with the deployment's secrets: the
/// workers' webhook, and the completion notices (`what` names it in errors).
/// `--http-client hyper` applies to the webhook only (`hyper`): notices may
/// go to an https endpoint elsewhere, which stays with reqwest.
fn signed_sink(settings: &Settings, url: &str, what: &str, hyper: bool) -> Fallible<HttpSink> {
    let mut sink = HttpSink::builder(url).timeout(Duration::from_millis(settings.timeout_ms));
    if hyper {
        sink = sink.hyper_client();
    }
    if !settings.secrets.is_empty() {
        sink = sink.secrets(settings.secrets.iter().cloned());
    }
    sink.build()
        .map_err(|e| format!("{what} {}: {e}", wds_http::redact_url(url)))
}

/// The initiator: watches the inbox, reads files into the queue, serves the
/// control API. Expired leases and due retries need no loop of their own:
/// every lease call reclaims and promotes them in the same atomic step.
pub(crate) async fn initiator(
    settings: &Settings,
    backend: &Backend,
    listener: TcpListener,
    webhook_url: &str,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Fallible<()> {
    let inbox = settings.inbox();
    std::fs::create_dir_all(&inbox)
        .map_err(|e| format!("cannot create the inbox {}: {e}", inbox.display()))?;
    let source = FolderSource::builder(&inbox)
        .settle(Duration::from_millis(settings.settle_ms.max(1)))
        .default_message(settings.default_message.clone())
        .archive(Some(settings.archive()))
        .rejected(Some(settings.rejected()))
        .build()
        .map_err(|e| format!("inbox: {e}"))?;
    let engine = backend.engine(settings, None, &metrics)?;
    let api = ControlApi::new(
        backend.queue.clone(),
        backend.offsets.clone(),
        metrics,
        control_config(settings, &inbox)
            .intake(source.status().clone())
            .control(backend.control.clone())
            .resend(Resender::new(settings.archive(), engine.clone()))
            .circuit(backend.circuits.clone(), endpoint_name(webhook_url))
            .workers(backend.workers.clone()),
    );
    let hook = match &settings.on_job_done {
        Some(url) => {
            let hook = signed_sink(settings, url, "--on-job-done", false)?;
            tracing::info!(url = %wds_http::redact_url(url), "completion notices on");
            Some(Arc::new(hook))
        }
        None => None,
    };
    std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
        format!(
            "cannot create the data folder {}: {e}",
            settings.data_dir.display()
        )
    })?;
    let announced = crate::notices::announce(
        backend.offsets.clone(),
        hook,
        settings.data_dir.join("notices"),
        cancel.clone(),
    );
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(inbox = %inbox.display(), api = %addr, backend = backend.name, "initiator running");
    let source: Arc<dyn Source> = Arc::new(source);
    let settle = Duration::from_millis(settings.settle_ms.max(1));
    let (read, (), served, ()) = tokio::join!(
        engine.read_source(source, cancel.clone()),
        announced,
        async {
            let served = api.serve(listener, cancel.clone()).await;
            cancel.cancel();
            served
        },
        fail_orphans(backend.offsets.as_ref(), &inbox, settle, &cancel),
    );
    served.map_err(|e| format!("control API: {e}"))?;
    read.map_err(|e| format!("initiator: {e}"))
}

/// Once, at start: a job still `reading` whose file is not in the inbox and
/// whose checkpoint does not move had its reader die (a killed initiator)
/// and its file removed meanwhile. Nothing is left to read it from, so it
/// is failed with the reason instead of staying `reading` for ever; the
/// lines it read stay counted. (A reader that is alive fails such a job
/// itself: failing twice changes nothing.)
async fn fail_orphans(
    offsets: &dyn OffsetStore,
    inbox: &std::path::Path,
    settle: Duration,
    cancel: &CancellationToken,
) {
    // Let the first scan hand over what is in the inbox and resumed jobs move.
    let pause = |d: Duration| async move {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = cancel.cancelled() => false,
        }
    };
    if !pause(settle * 2 + Duration::from_secs(2)).await {
        return;
    }
    let reports = match offsets.reports().await {
        Ok(reports) => reports,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list jobs to find orphaned ones");
            return;
        }
    };
    let orphans: Vec<_> = reports
        .into_iter()
        .filter(|r| r.state == wds_core::JobState::Reading)
        .filter(|r| !inbox.join(r.meta.file_name()).exists())
        .collect();
    if orphans.is_empty() {
        return;
    }
    let mut before = Vec::new();
    for r in &orphans {
        before.push(offsets.checkpoint(&r.job).await.ok());
    }
    if !pause(Duration::from_secs(3)).await {
        return;
    }
    for (r, before) in orphans.iter().zip(before) {
        let after = offsets.checkpoint(&r.job).await.ok();
        if before.is_none() || before != after || inbox.join(r.meta.file_name()).exists() {
            continue;
        }
        let reason = "the file was removed while no initiator was reading it";
        match offsets.fail(&r.job, reason).await {
            Ok(_) => tracing::warn!(job = %r.job, name = %r.meta.name, reason, "job failed"),
            Err(e) => tracing::warn!(job = %r.job, error = %e, "cannot fail an orphaned job"),
        }
    }
}

/// A worker: leases batches and calls the webhook until cancelled, then
/// finishes what is on the wire and releases the rest.
pub(crate) async fn worker(
    settings: &Settings,
    backend: &Backend,
    webhook_url: String,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Fallible<()> {
    let hyper = settings.http_client == "hyper";
    let sink = signed_sink(settings, &webhook_url, "webhook", hyper)?;
    tracing::info!(client = %settings.http_client, "webhook client");
    let engine = backend.engine(settings, Some((sink, &webhook_url)), &metrics)?;
    // Each delivery thread gets a client of its own: its connections are
    // driven by that thread's runtime.
    let threads = match settings.delivery_threads {
        Threads::Auto => DeliveryThreads::auto(engine.config()),
        Threads::Fixed(n) => n,
    };
    let delivery = DeliveryThreads::new(&engine, threads, |_| {
        let sink = signed_sink(settings, &webhook_url, "webhook", hyper)
            .map_err(|e| wds_core::Error::config("webhook", e))?;
        Ok(Arc::new(metrics.wrap(sink)) as Arc<dyn wds_core::Sink>)
    })
    .map_err(|e| e.to_string())?;
    let metrics_server = match settings.metrics_listen {
        Some(addr) => Some(bind(addr, "worker metrics").await?),
        None => None,
    };
    let metrics_addr = match &metrics_server {
        Some(listener) => Some(listener.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let host = hostname();
    let pid = std::process::id();
    let id = settings
        .worker_name
        .clone()
        .unwrap_or_else(|| format!("{host}-{pid}"));
    tracing::info!(
        webhook = %wds_http::redact_url(&webhook_url),
        concurrency = %settings.concurrency,
        delivery_threads = delivery.deliverers().len(),
        in_doubt_window = engine.config().in_doubt_window(threads),
        backend = backend.name,
        metrics = ?metrics_addr,
        worker = %id,
        "worker running"
    );
    let started_ms = wds_core::backend::now_ms();
    let snapshot = || {
        WorkerBeat::new(id.as_str())
            .process(host.as_str(), pid)
            .started_ms(started_ms)
            .calls(
                metrics.delivered(),
                metrics.failed(),
                metrics.rate_limited(),
            )
            .in_flight(
                metrics.in_flight(),
                delivery.concurrency_limit().try_into().unwrap_or(u64::MAX),
            )
    };
    // The last beat goes once delivery has stopped, with the final counts.
    let beats_stop = CancellationToken::new();
    let (delivered, served, (), ()) = tokio::join!(
        async {
            let delivered = delivery.run(cancel.clone()).await;
            beats_stop.cancel();
            delivered
        },
        async {
            match metrics_server {
                Some(listener) => {
                    let limits = settings.server_limits();
                    let view = WorkerView {
                        circuit: engine.circuit().cloned(),
                        delivery: delivery.clone(),
                    };
                    let (metrics, cancel) = (metrics.clone(), cancel.clone());
                    serve_metrics(listener, backend.clone(), metrics, view, limits, cancel).await
                }
                None => Ok(()),
            }
        },
        // The limit moves with --concurrency auto: the gauge follows it for
        // every /metrics of this process (`all` serves the control API's).
        async {
            loop {
                metrics.concurrency_limit(delivery.concurrency_limit());
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => break,
                }
            }
        },
        wds_core::backend::heartbeat(
            backend.workers.as_ref(),
            BEAT_INTERVAL,
            snapshot,
            beats_stop.clone()
        ),
    );
    served?;
    delivered.map_err(|e| format!("worker: {e}"))
}

/// This machine's name, for a worker's default id: the kernel's, else
/// `HOSTNAME`, else `localhost`.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What a worker's own `/metrics` and `/healthz` show of its delivery.
#[derive(Debug)]
struct WorkerView {
    circuit: Option<Arc<wds_core::health::CircuitBreaker>>,
    delivery: DeliveryThreads,
}

/// A worker's own `/metrics` (its delivery counters, calls in flight limit,
/// circuit and the queue gauges) and `/healthz`.
async fn serve_metrics(
    listener: TcpListener,
    backend: Backend,
    metrics: Arc<Metrics>,
    view: WorkerView,
    limits: wds_server::ServerLimits,
    cancel: CancellationToken,
) -> Fallible<()> {
    use axum::routing::get;
    let view = Arc::new(view);
    let render = {
        let view = view.clone();
        move || {
            let (backend, metrics, view) = (backend.clone(), metrics.clone(), view.clone());
            async move {
                if let Some(breaker) = &view.circuit {
                    metrics.circuit(breaker.endpoint(), &breaker.state().await);
                }
                metrics.concurrency_limit(view.delivery.concurrency_limit());
                let stats = backend.queue.stats().await.ok();
                metrics.render(stats.as_ref(), &[])
            }
        }
    };
    // The worker's own view: alive, its calls in flight limit, its circuit.
    let health = move || {
        let view = view.clone();
        async move {
            let circuit = match &view.circuit {
                Some(breaker) => {
                    let state = breaker.state().await;
                    serde_json::json!({
                        "endpoint": breaker.endpoint(),
                        "open": state.is_open(),
                        "open_since_ms": state.open_since_ms(),
                    })
                }
                None => serde_json::Value::Null,
            };
            axum::Json(serde_json::json!({
                "status": "ok",
                "concurrency_limit": view.delivery.concurrency_limit(),
                "circuit": circuit,
            }))
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(health));
    wds_server::server::serve(listener, app, limits, cancel)
        .await
        .map_err(|e| format!("worker metrics: {e}"))
}
