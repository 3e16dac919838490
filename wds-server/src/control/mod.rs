//! The control API (the initiator's HTTP server): upload files, replay dead
//! letters, follow jobs, health and metrics.
//!
//! | route | what it does |
//! |---|---|
//! | `POST /upload` | multipart field `file` (required), `message` and `format` (optional); streamed to a temporary file in the inbox and renamed into place, so a half-uploaded file is never picked up; the client's file name becomes the job's display name (never a path). Answers `202` with the job id, or `503` while the inbox cannot be read (the file would not be picked up). |
//! | `POST /retry` | replays dead letters: all, or one job's with `{"job": "<id>"}` or `?job=<id>`. Answers `{"replayed": n}`. |
//! | `GET /jobs` | every job: state, lines, delivered, dead (and by reason: permanent, exhausted, in_doubt), invalid, duplicate, in_flight, rate, started/finished; while the webhook's circuit is open (see [`ControlConfig::circuit`]) an unfinished job also has `paused: "endpoint unavailable since <date>"` and `endpoint_unavailable_since_ms`. |
//! | `GET /jobs/{id}` | one job, with its first rejected lines and dead letters. |
//! | `POST /jobs/{id}/pause` | stops leasing the job's batches (those on the wire finish); answers the job. |
//! | `POST /jobs/{id}/resume` | leases them again; answers the job. |
//! | `POST /jobs/{id}/cancel` | stops the job for good: reading stops, its queued lines end `cancelled`; answers the job. |
//! | `POST /jobs/{id}/resend` | reads a finished job's archived file again as a new job with a new identity (see [`Resender`]); answers `202` with `{"job": "<new id>", "resend_of": "<id>"}`, `409` when the job is not finished or its file is not archived. |
//! | `POST /jobs/{id}/replay` | replays the job's dead letters of one reason, `{"reason": "exhausted" \| "in_doubt" \| "permanent" \| "all"}` (an empty body is `all`); answers `{"replayed": n}`. Replaying `in_doubt` may alert those users twice. |
//! | `GET /` | the status page (see `page`): jobs with live progress, their rejected lines and dead letters, the queue, an upload form. Served without the token (it holds no data); its script asks for the token and sends it. |
//! | `GET /jobs/{id}/lines/{n}` | what became of line `n`: `delivered` with its receipt, `dead` or `invalid` with the reason, `duplicate` with the first line, or `pending`; and the attempts. `404` for an unknown job or a line that holds no record, `400` for a bad number. |
//! | `GET /jobs/{id}/users/{userId}` | did this user get it: every line of the job's file naming the user (up to 1,000), each with its outcome, and `delivered` when one was. The file is found in the inbox or [`ControlConfig::archives`] by its identity and read again (no per-user index is stored). `404` when the user has no line or the file is gone. |
//! | `GET /workers` | the workers seen (see [`ControlConfig::workers`]): each one's last beat (id, host, pid, counters since it started, calls in flight and their limit), `seen_ms`, `live` (beat within three beat intervals) and `rate_per_s` (deliveries a second between its last two beats this API read); `501` without a registry. |
//! | `GET /healthz` | `200` when the backend answers and the inbox can be read, `503` with the reason otherwise. Never needs the token. |
//! | `GET /intake` | the intake's status: whether the inbox can be read, the entries skipped (symlinks, FIFOs…), a pending archiving error. |
//! | `GET /metrics` | Prometheus text format (see [`crate::Metrics`]). |
//! | `GET /openapi.json` | this table as an OpenAPI 3.1 description, generated from the handlers (utoipa). Never needs the token. |
//!
//! Every error is a JSON body `{"error": "..."}` with a 4xx or 5xx status.
//! When a token is configured, every route but `/healthz`, `/openapi.json` and the page `/` needs
//! `Authorization: Bearer <token>` (the scheme in any case; compared in
//! constant time, through digests, so not even its length leaks).
//!
//! Limits (see [`ControlConfig`]): uploads up to `max_upload_bytes` (`413`),
//! `max_concurrent_uploads` at once (`503` with `Retry-After`), never below
//! `min_free_disk_bytes` of free space (`507`); every other request within
//! [`ServerLimits::request_timeout`] (`408`); header, idle and connection
//! limits as [`crate::server`] describes.
//!
//! Job control (pause, resume, cancel, replay by reason) needs
//! [`ControlConfig::control`]: `404` for an unknown job, `409` for an
//! action the job's state does not allow (resume a cancelled job), `501`
//! without it.
//!
//! Bind it to a loopback address unless it is behind a proxy that
//! authenticates: the caller chooses the listener.

mod job_files;
mod jobs;
mod openapi;
mod page;
mod receipts;
mod resend;
mod upload;
mod workers;

pub use resend::Resender;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use wds_core::backend::{CircuitState, CircuitStore};
use wds_core::backend::{WorkerRegistry, BEAT_INTERVAL};
use wds_core::{
    backend::{now_ms, JobControl, OffsetStore, Queue, Reject},
    source::IntakeStatus,
    DeadLetter, JobId, JobReport,
};

use crate::metrics::Metrics;
use crate::server::ServerLimits;

/// Settings of the [`ControlApi`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ControlConfig {
    /// The folder the initiator watches: uploads are renamed into it.
    pub inbox: PathBuf,
    /// Largest accepted upload, in bytes (default 1 GiB): `413` past it.
    pub max_upload_bytes: u64,
    /// Uploads received at once (default 4, at least 1): one more gets
    /// `503` with `Retry-After`.
    pub max_concurrent_uploads: usize,
    /// Free space the inbox's file system keeps, in bytes (default 1 GiB):
    /// an upload that would go below it gets `507 Insufficient Storage`,
    /// checked before and while it is received.
    pub min_free_disk_bytes: u64,
    /// How long an upload may take, body included (default 15 min). Every
    /// other request gets [`ServerLimits::request_timeout`].
    pub upload_timeout: Duration,
    /// Timeouts and the connection cap of [`ControlApi::serve`].
    pub limits: ServerLimits,
    /// Bearer token required on every route but `/healthz`, when set.
    pub token: Option<String>,
    /// How many rejected lines and dead letters `GET /jobs/{id}` shows (default 100).
    pub detail_limit: usize,
    /// The inbox's source status, when a source reports one: `/healthz`
    /// and `/upload` answer 503 while it says the inbox cannot be read.
    pub intake: Option<IntakeStatus>,
    /// The backend's job control (a view of the same backend as the
    /// queue): the `/jobs/{id}/pause`, `resume`, `cancel` and `replay`
    /// routes answer `501` without it.
    pub control: Option<Arc<dyn JobControl>>,
    /// Where `POST /jobs/{id}/resend` finds a job's file and how it reads
    /// it again; the route answers `501` without it.
    pub resend: Option<Resender>,
    /// Folders where finished files go (the archive, the rejected folder):
    /// `GET /jobs/{id}/users/{userId}` looks there, after the inbox, for
    /// the job's file.
    pub archives: Vec<PathBuf>,
    /// The webhook's circuit (its store and endpoint name), when known:
    /// `/jobs` then shows unfinished jobs as paused while it is open, and
    /// `/metrics` shows its state.
    pub circuit: Option<(Arc<dyn CircuitStore>, String)>,
    /// Where the workers beat (see [`WorkerRegistry`]): `GET /workers`
    /// lists them (`501` without it) and `/metrics` counts them.
    pub workers: Option<Arc<dyn WorkerRegistry>>,
    /// How often the workers beat (default
    /// [`wds_core::backend::BEAT_INTERVAL`]): one not heard from for three
    /// intervals is shown as gone.
    pub worker_beat_interval: Duration,
}

impl ControlConfig {
    /// Settings for an inbox, with the defaults.
    pub fn new(inbox: impl Into<PathBuf>) -> Self {
        ControlConfig {
            inbox: inbox.into(),
            max_upload_bytes: 1 << 30,
            max_concurrent_uploads: 4,
            min_free_disk_bytes: 1 << 30,
            upload_timeout: Duration::from_secs(15 * 60),
            limits: ServerLimits::default(),
            token: None,
            detail_limit: 100,
            intake: None,
            control: None,
            resend: None,
            archives: Vec::new(),
            circuit: None,
            workers: None,
            worker_beat_interval: BEAT_INTERVAL,
        }
    }

    /// Lists the workers that beat into `registry` (see [`ControlConfig::workers`]).
    pub fn workers(mut self, registry: Arc<dyn WorkerRegistry>) -> Self {
        self.workers = Some(registry);
        self
    }

    /// Enables `POST /jobs/{id}/resend` (see [`Resender`]).
    pub fn resend(mut self, resender: Resender) -> Self {
        self.resend = Some(resender);
        self
    }

    /// Enables the job control routes over `control` (see
    /// [`ControlConfig::control`]).
    pub fn control(mut self, control: Arc<dyn JobControl>) -> Self {
        self.control = Some(control);
        self
    }

    /// Shows the status of the source reading the inbox (see
    /// [`ControlConfig::intake`]).
    pub fn intake(mut self, status: IntakeStatus) -> Self {
        self.intake = Some(status);
        self
    }

    /// Adds a folder where finished files go (see [`ControlConfig::archives`]).
    pub fn archive(mut self, folder: impl Into<PathBuf>) -> Self {
        self.archives.push(folder.into());
        self
    }

    /// Shows the circuit of `endpoint` in `store` (see [`ControlConfig::circuit`]).
    pub fn circuit(mut self, store: Arc<dyn CircuitStore>, endpoint: impl Into<String>) -> Self {
        self.circuit = Some((store, endpoint.into()));
        self
    }

    /// Sets the largest accepted upload.
    pub fn max_upload_bytes(mut self, bytes: u64) -> Self {
        self.max_upload_bytes = bytes;
        self
    }

    /// Requires `Authorization: Bearer <token>` (ignored when `None` or empty).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }
}

/// The control API over a backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ControlApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Arc<dyn Queue>,
    offsets: Arc<dyn OffsetStore>,
    metrics: Arc<Metrics>,
    /// One permit per upload received at once.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Which file in the inbox and archives is which job's.
    job_files: Arc<job_files::JobFiles>,
    /// The last beats read of each worker, for its rate.
    worker_rates: workers::Rates,
    config: ControlConfig,
}

/// An error answered as `{"error": "..."}` with a status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn backend(e: wds_core::Error) -> Self {
        tracing::warn!(error = %e, "backend call failed in the control API");
        let status = if e.is_retryable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, format!("backend error: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Backend calls from a request get this long before the answer is a 503.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn backend<T>(
    fut: impl std::future::Future<Output = wds_core::Result<T>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(BACKEND_TIMEOUT, fut).await {
        Ok(r) => r.map_err(ApiError::backend),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the backend did not answer in time",
        )),
    }
}

impl ControlApi {
    /// The API over a queue and offset store of one backend.
    pub fn new(
        queue: Arc<dyn Queue>,
        offsets: Arc<dyn OffsetStore>,
        metrics: Arc<Metrics>,
        config: ControlConfig,
    ) -> Self {
        ControlApi {
            inner: Arc::new(Inner {
                queue,
                offsets,
                metrics,
                uploads: Arc::new(tokio::sync::Semaphore::new(
                    config.max_concurrent_uploads.max(1),
                )),
                job_files: Arc::default(),
                worker_rates: workers::Rates::default(),
                config,
            }),
        }
    }

    /// The routes, ready to serve or to nest in your own router.
    pub fn router(&self) -> Router {
        let upload_limit = usize::try_from(self.inner.config.max_upload_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20);
        let quick = Router::new()
            .route("/retry", post(retry))
            .route("/jobs", get(jobs))
            .route("/jobs/{id}", get(job))
            .route("/jobs/{id}/pause", post(jobs::pause))
            .route("/jobs/{id}/resume", post(jobs::resume))
            .route("/jobs/{id}/cancel", post(jobs::cancel))
            .route("/jobs/{id}/replay", post(jobs::replay))
            .route("/jobs/{id}/resend", post(jobs::resend))
            .route("/jobs/{id}/lines/{n}", get(receipts::line))
            .route("/jobs/{id}/users/{user}", get(receipts::user))
            .route("/workers", get(workers::workers))
            .route("/metrics", get(metrics))
            .route("/intake", get(intake))
            .route_layer(middleware::from_fn_with_state(
                self.clone(),
                within_request_timeout,
            ));
        let protected = Router::new()
            .route(
                "/upload",
                post(upload::upload).layer(DefaultBodyLimit::max(upload_limit)),
            )
            .merge(quick)
            .route_layer(middleware::from_fn_with_state(self.clone(), require_token));
        Router::new()
            .route("/healthz", get(healthz))
            .route("/", get(page::status_page))
            .route("/openapi.json", get(openapi::openapi_json))
            .merge(protected)
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed on this route",
                )
            })
            .with_state(self.clone())
    }

    /// Serves the API on `listener` under [`ControlConfig::limits`] until
    /// `shutdown` fires. Warns when the API has no token and listens on an
    /// address other than loopback.
    ///
    /// # Errors
    ///
    /// An I/O error of the listener, or invalid limits.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let config = &self.inner.config;
        if let Ok(addr) = listener.local_addr() {
            if config.token.is_none() && !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the control API listens beyond loopback WITHOUT a token: anyone who reaches it can upload and replay");
            }
        }
        let mut limits = config.limits;
        // The server's own limit lets uploads run their course; every other
        // route has the shorter one (see `request_timeout`).
        limits.request_timeout = limits.request_timeout.max(config.upload_timeout);
        crate::server::serve(listener, self.router(), limits, shutdown).await
    }
}

/// Every route but `/upload` answers within [`ServerLimits::request_timeout`]
/// (body included), or `408`.
async fn within_request_timeout(
    State(api): State<ControlApi>,
    request: Request,
    next: Next,
) -> Response {
    let limit = api.inner.config.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {limit:?}"),
        )
        .into_response(),
    }
}

async fn require_token(State(api): State<ControlApi>, request: Request, next: Next) -> Response {
    let Some(token) = &api.inner.config.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let ok = given.is_some_and(|g| token_matches(g, token));
    if ok {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token (Authorization: Bearer <token>)",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares digests in constant time: the time taken says nothing about the
/// expected token, its length included.
fn token_matches(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

/// A job's report with the figures a person watching it wants.
#[derive(Debug, Serialize)]
struct JobView {
    #[serde(flatten)]
    report: JobReport,
    in_flight: u64,
    started_ms: u64,
    elapsed_ms: u64,
    deliveries_per_s: f64,
    /// While the webhook's circuit is open and the job is not finished:
    /// `endpoint unavailable since <HTTP date>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<String>,
    /// When that circuit opened (Unix milliseconds), with `paused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_unavailable_since_ms: Option<u64>,
}

impl JobView {
    fn new(report: JobReport) -> Self {
        let end = report.finished_ms.unwrap_or_else(now_ms);
        let elapsed_ms = end.saturating_sub(report.meta.created_ms);
        let rate = if elapsed_ms == 0 {
            0.0
        } else {
            report.delivered as f64 * 1000.0 / elapsed_ms as f64
        };
        JobView {
            in_flight: report.in_flight(),
            started_ms: report.meta.created_ms,
            elapsed_ms,
            deliveries_per_s: (rate * 10.0).round() / 10.0,
            paused: None,
            endpoint_unavailable_since_ms: None,
            report,
        }
    }

    /// Marks an unfinished job paused while the webhook's circuit is open.
    fn circuit(mut self, circuit: &CircuitState) -> Self {
        if let Some(since) = circuit.open_since_ms() {
            if !self.report.is_finished() {
                let at = std::time::UNIX_EPOCH + Duration::from_millis(since);
                self.paused = Some(format!(
                    "endpoint unavailable since {}",
                    httpdate::fmt_http_date(at)
                ));
                self.endpoint_unavailable_since_ms = Some(since);
            }
        }
        self
    }
}

/// The webhook's circuit, when the API knows it: closed when it cannot be
/// read (a view must not fail for it).
async fn circuit(api: &ControlApi) -> Option<(String, CircuitState)> {
    let (store, endpoint) = api.inner.config.circuit.as_ref()?;
    let state = match store.load(endpoint).await {
        Ok(state) => state,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the circuit");
            CircuitState::Closed
        }
    };
    Some((endpoint.clone(), state))
}

#[utoipa::path(
    get,
    path = "/jobs",
    responses(
        (status = 200, description = "Every job, newest first: job, meta (name, format, created_ms), state, lines, enqueued, delivered, dead, in_doubt, invalid, duplicate, in_flight, started_ms, elapsed_ms, deliveries_per_s, finished_ms, failure", body = Vec<serde_json::Value>),
        (status = 401, description = "Missing or wrong token", body = openapi::ErrorBody),
        (status = 503, description = "The backend is unavailable", body = openapi::ErrorBody),
    )
)]
async fn jobs(State(api): State<ControlApi>) -> Result<Json<Vec<JobView>>, ApiError> {
    let reports = backend(api.inner.offsets.reports()).await?;
    let state = circuit(&api).await.map(|(_, s)| s).unwrap_or_default();
    Ok(Json(
        reports
            .into_iter()
            .map(|r| JobView::new(r).circuit(&state))
            .collect(),
    ))
}

#[derive(Debug, Serialize)]
struct JobDetail {
    #[serde(flatten)]
    view: JobView,
    rejects: Vec<Reject>,
    dead_letters: Vec<DeadLetter>,
}

#[utoipa::path(
    get,
    path = "/jobs/{id}",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job as in `/jobs`, with its first `rejects` and `dead_letters`", body = serde_json::Value),
        (status = 404, description = "No such job", body = openapi::ErrorBody),
    )
)]
async fn job(
    State(api): State<ControlApi>,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
    let job = JobId::new(id);
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no job {job}"));
    let report = backend(api.inner.offsets.report(&job))
        .await?
        .ok_or_else(not_found)?;
    let limit = api.inner.config.detail_limit;
    let rejects = backend(api.inner.offsets.rejects(&job, limit)).await?;
    let dead_letters = backend(api.inner.queue.dead_letters(Some(&job), limit)).await?;
    let state = circuit(&api).await.map(|(_, s)| s).unwrap_or_default();
    Ok(Json(JobDetail {
        view: JobView::new(report).circuit(&state),
        rejects,
        dead_letters,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    job: Option<String>,
}

#[utoipa::path(
    post,
    path = "/retry",
    params(("job" = Option<String>, Query, description = "Only this job's dead letters")),
    request_body(content = serde_json::Value, description = "Empty, or `{\"job\": \"<id>\"}`"),
    responses(
        (status = 200, description = "`{\"replayed\": n}`", body = serde_json::Value),
        (status = 400, description = "A body that is neither", body = openapi::ErrorBody),
        (status = 404, description = "No such job", body = openapi::ErrorBody),
    )
)]
async fn retry(
    State(api): State<ControlApi>,
    Query(query): Query<RetryRequest>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let from_body: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("expected an empty body or {{\"job\": \"<id>\"}}: {e}"),
            )
        })?
    };
    let job = from_body.job.or(query.job).map(JobId::from);
    if let Some(job) = &job {
        if backend(api.inner.offsets.report(job)).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no job {job}"),
            ));
        }
    }
    let replayed = backend(api.inner.queue.replay(job.as_ref())).await?;
    tracing::info!(replayed, job = ?job, "dead letters replayed");
    Ok(Json(json!({ "replayed": replayed })))
}

#[utoipa::path(
    get,
    path = "/intake",
    responses((status = 200, description = "`unreadable`, `archive_error` and the `skipped` entries of the inbox", body = serde_json::Value))
)]
async fn intake(State(api): State<ControlApi>) -> Response {
    match &api.inner.config.intake {
        Some(status) => Json(status.report()).into_response(),
        None => Json(json!({ "unreadable": null, "archive_error": null, "skipped": [] }))
            .into_response(),
    }
}

impl ControlApi {
    /// Why the inbox cannot be read, when the source says so.
    pub(crate) fn inbox_unreadable(&self) -> Option<String> {
        self.inner.config.intake.as_ref()?.unreadable()
    }
}

#[utoipa::path(
    get,
    path = "/healthz",
    security(()),
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`", body = serde_json::Value),
        (status = 503, description = "The backend does not answer or the inbox cannot be read", body = serde_json::Value),
    )
)]
async fn healthz(State(api): State<ControlApi>) -> Response {
    if let Some(reason) = api.inbox_unreadable() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": format!("inbox: {reason}") })),
        )
            .into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), api.inner.queue.stats()).await {
        Ok(Ok(_)) => Json(json!({ "status": "ok" })).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": e.to_string() })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": "backend timed out" })),
        )
            .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Prometheus (OpenMetrics) text", content_type = "application/openmetrics-text"))
)]
async fn metrics(State(api): State<ControlApi>) -> Response {
    // A scrape still answers when the backend is down: the gauges just
    // keep their last values.
    let stats = backend(api.inner.queue.stats()).await.ok();
    let reports = backend(api.inner.offsets.reports())
        .await
        .unwrap_or_default();
    if let Some((endpoint, state)) = circuit(&api).await {
        api.inner.metrics.circuit(&endpoint, &state);
    }
    if let Ok(Some(views)) = api.worker_views().await {
        let (live, gone) = workers::live_and_gone(&views);
        api.inner.metrics.workers(live, gone);
    }
    let text = api.inner.metrics.render(stats.as_ref(), &reports);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
