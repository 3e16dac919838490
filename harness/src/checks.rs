//! Checks shared by the fault tests that need to see more than the endpoint
//! shows: a recording pass-through that knows which worker sent each
//! request (each worker is given its own URL, `/webhook/<tag>`), passes it
//! on to the real endpoint (the bundled notifier, or a scripted
//! [`TestReceiver`](crate::receiver::TestReceiver)) and records what it
//! answered; and counts over what it recorded.
//!
//! The notifier drops repeated `webhook-id`s, so its output cannot show a
//! repeat. Standing in front of it, the recorder sees every request the
//! workers made (repeats included) and every `{"status":"duplicate"}` the
//! notifier answered, so a test can check both against each other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::http::http_get;

/// How long a request waits for the upstream to be
/// known (a sender may call before the test has read it from a log).
const UPSTREAM_WAIT: Duration = Duration::from_secs(120);

/// One request as the recorder saw it.
#[derive(Clone, Debug)]
pub struct Sent {
    /// The worker's tag: the last segment of `/webhook/<tag>` (empty for
    /// `/webhook`).
    pub tag: String,
    /// Its `webhook-id`.
    pub id: String,
    /// Its `userId`.
    pub user: String,
    /// When it arrived.
    pub at: Instant,
    /// The status the endpoint answered (`None`: it could not be reached
    /// and the sender got a 502).
    pub status: Option<u16>,
    /// The endpoint answered `{"status":"duplicate"}`: the notifier dropped
    /// a repeat.
    pub duplicate: bool,
    /// Whether the request may have reached the endpoint: false only when
    /// the connection was refused. An answer lost after connecting (the
    /// endpoint died while handling it) leaves it true with no `status`.
    pub reached: bool,
    /// The request as passed on (headers and body), for
    /// [`Recorder::resend`].
    pub request: Arc<(HeaderMap, Bytes)>,
}

/// What passing one request on gave.
struct Passed {
    status: Option<u16>,
    duplicate: bool,
    reached: bool,
    response: Response,
}

struct Shared {
    /// Where requests go (`http://host:port/path`), once known.
    upstream: tokio::sync::watch::Sender<Option<String>>,
    client: reqwest::Client,
    sent: Mutex<Vec<Sent>>,
    per_id: Mutex<HashMap<String, u32>>,
    total: AtomicU64,
}

/// The recording pass-through: serves `POST /webhook` and
/// `POST /webhook/<tag>` on 127.0.0.1 until dropped.
pub struct Recorder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder passing every request on to `upstream` (a URL such as
    /// `http://127.0.0.1:8090/webhook`) or, when `None`, to the one given
    /// later with [`Recorder::set_upstream`] (requests wait for it).
    pub fn new(upstream: Option<String>) -> Self {
        let (upstream, _) = tokio::sync::watch::channel(upstream);
        let shared = Arc::new(Shared {
            upstream,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            sent: Mutex::new(Vec::new()),
            per_id: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("recorder runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the recorder");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .route("/webhook", post(untagged))
            .route("/webhook/{tag}", post(tagged))
            .with_state(shared.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Recorder {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// A recorder in front of the notifier listening on `addr` (`host:port`).
    pub fn notifier(addr: &str) -> Self {
        Self::new(Some(format!("http://{addr}/webhook")))
    }

    /// The URL for the worker tagged `tag`, for its `WDS_WEBHOOK_URL`.
    pub fn url(&self, tag: &str) -> String {
        format!("http://{}/webhook/{tag}", self.addr)
    }

    /// Where requests go from now on (a URL).
    pub fn set_upstream(&self, url: &str) {
        self.shared.upstream.send_replace(Some(url.to_string()));
    }

    /// Every request answered so far, in the order the answers went out.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.sent.lock().unwrap().clone()
    }

    /// Every request, once each that arrived has been answered (waits up
    /// to `timeout`, then panics).
    pub fn answered(&self, timeout: Duration) -> Vec<Sent> {
        let deadline = Instant::now() + timeout;
        loop {
            let sent = self.sent();
            if sent.len() as u64 == self.count() {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} requests answered after {timeout:?}",
                sent.len(),
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Requests that arrived so far (answered or not).
    pub fn count(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Requests per `webhook-id` that arrived so far.
    pub fn per_id(&self) -> HashMap<String, u32> {
        self.shared.per_id.lock().unwrap().clone()
    }

    /// Sends `sent`'s request again, byte for byte (its signature too), to
    /// the upstream, bypassing the record; returns the status and whether
    /// the answer was `{"status":"duplicate"}` (`None`: no answer).
    pub fn resend(&self, sent: &Sent) -> Option<(u16, bool)> {
        let runtime = self.runtime.as_ref()?;
        let (headers, body) = &*sent.request;
        // A client of its own that keeps no connection open: an idle one
        // left behind would hold up the endpoint's graceful stop.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client");
        let passed = runtime.block_on(async {
            let passed = forward(&self.shared.upstream, &client, headers, body.clone()).await;
            drop(client);
            passed
        });
        Some((passed.status?, passed.duplicate))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

async fn untagged(state: State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(state.0, String::new(), headers, body).await
}

async fn tagged(
    state: State<Arc<Shared>>,
    Path(tag): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state.0, tag, headers, body).await
}

async fn handle(shared: Arc<Shared>, tag: String, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    let (id, user) = crate::receiver::id_and_user(&headers, &body);
    shared.total.fetch_add(1, Ordering::SeqCst);
    *shared.per_id.lock().unwrap().entry(id.clone()).or_insert(0) += 1;
    // In a task of its own: a sender killed while waiting must not stop the
    // request from being passed on and recorded.
    let task = tokio::spawn(async move {
        let passed = forward(&shared.upstream, &shared.client, &headers, body.clone()).await;
        shared.sent.lock().unwrap().push(Sent {
            tag,
            id,
            user,
            at,
            status: passed.status,
            duplicate: passed.duplicate,
            reached: passed.reached,
            request: Arc::new((headers, body)),
        });
        passed.response
    });
    match task.await {
        Ok(response) => response,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn forward(
    upstream: &tokio::sync::watch::Sender<Option<String>>,
    client: &reqwest::Client,
    headers: &HeaderMap,
    body: Bytes,
) -> Passed {
    let failed = |reached: bool, why: String| Passed {
        status: None,
        duplicate: false,
        reached,
        response: (StatusCode::BAD_GATEWAY, why).into_response(),
    };
    let mut known = upstream.subscribe();
    let url = match tokio::time::timeout(UPSTREAM_WAIT, known.wait_for(Option::is_some)).await {
        Ok(Ok(url)) => url.clone().unwrap_or_default(),
        _ => return failed(false, "no upstream".into()),
    };
    let mut request = client.post(url).body(body);
    for name in [
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return failed(!e.is_connect(), e.to_string()),
    };
    let status = answer.status().as_u16();
    // What the sender acts on besides the status: a 429's Retry-After.
    let retry_after = answer.headers().get("retry-after").cloned();
    let text = answer.text().await.unwrap_or_default();
    let duplicate = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v["status"] == "duplicate");
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        text,
    )
        .into_response();
    if let Some(value) = retry_after {
        response.headers_mut().insert("retry-after", value);
    }
    Passed {
        status: Some(status),
        duplicate,
        reached: true,
        response,
    }
}

/// Messages one deliverer may leave in doubt when it dies: its sending
/// window with `config` (`sending_batches() * batch_size`), the bound of G2.
pub fn in_doubt_window(config: &wds_core::EngineConfig) -> u64 {
    (config.sending_batches() * config.batch_size) as u64
}

/// Messages one `full_system` worker process may leave in doubt when it
/// dies with `config` and its default delivery threads
/// ([`DeliveryThreads::auto`](wds_core::engine::DeliveryThreads::auto)):
/// the sum of its threads' sending windows.
pub fn worker_in_doubt_window(config: &wds_core::EngineConfig) -> u64 {
    let threads = wds_core::engine::DeliveryThreads::auto(config);
    config.in_doubt_window(threads) as u64
}

/// Calls beyond the first, summed over every id: the repeats the senders made.
pub fn repeats(per_id: &HashMap<String, u32>) -> u64 {
    per_id
        .values()
        .map(|n| u64::from(n.saturating_sub(1)))
        .sum()
}

/// The ids called more than once, with their counts (sorted, for messages).
pub fn repeated(per_id: &HashMap<String, u32>) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = per_id
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| (id.clone(), *n))
        .collect();
    out.sort();
    out
}

/// Panics, naming a few, when any id was called more than once (`what`
/// says where, for the message).
#[track_caller]
pub fn assert_sent_once(per_id: &HashMap<String, u32>, what: &str) {
    let twice = repeated(per_id);
    assert!(
        twice.is_empty(),
        "{} ids {what} more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
}

/// Requests per tag.
pub fn per_tag(sent: &[Sent]) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for s in sent {
        *out.entry(s.tag.clone()).or_default() += 1;
    }
    out
}

/// Lines of the notifier's output CSV per user (the first field).
pub fn users_in(output: &std::path::Path) -> HashMap<String, u32> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(output)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read the notifier's output {}: {e}",
                output.display()
            )
        });
    let mut users = HashMap::new();
    for record in reader.records() {
        let record = record.unwrap_or_else(|e| panic!("{}: {e}", output.display()));
        *users.entry(record[0].to_string()).or_default() += 1;
    }
    users
}

/// A counter of a Prometheus text page, e.g. `wds_deliveries_total{outcome="delivered"}`.
pub fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// How many calls the worker serving `/metrics` at `addr` delivered (its own
/// `wds_deliveries_total{outcome="delivered"}`); `None` when it does not answer.
pub fn delivered_by(addr: &str) -> Option<u64> {
    match http_get(addr, "/metrics")? {
        (200, page) => metric(&page, "wds_deliveries_total{outcome=\"delivered\"}"),
        _ => None,
    }
}
