//! Webhook receivers inside the test process.
//!
//! [`TestReceiver`], a scriptable one: it records every
//! request it gets (repeats included, unlike the bundled notifier, which
//! drops them) and answers as a script says: 200, an error status, 429 with
//! `Retry-After`, a stall past the sender's timeout, or a connection closed
//! without any response. It may also enforce a rate limit of its own.
//!
//! The WDS processes under test are real; they reach this receiver through
//! `WDS_WEBHOOK_URL`.
//!
//! [`ProductReceiver`], the product's own receiver (the bundled notifier's
//! verify, dedupe and CSV) in this process, which can answer late and notes
//! arrival times: what a benchmark delivers to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

mod product;

pub use product::ProductReceiver;

/// What the receiver does with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// 200.
    Ok,
    /// This status, with a short body.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    TooMany {
        /// The `Retry-After` value, in seconds.
        secs: u64,
    },
    /// Wait this long, then answer 200 (to a sender that has long gone when
    /// the wait exceeds its timeout).
    Stall(Duration),
    /// Close the connection without answering.
    Reset,
}

/// One request, as the script sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// Its `webhook-id` (empty when missing).
    pub id: &'a str,
    /// The `userId` of its body (empty when the body is not the expected JSON).
    pub user: &'a str,
    /// How many requests with this id arrived before, this one included (1-based).
    pub nth: u32,
    /// How many requests arrived before, this one included (1-based).
    pub total: u64,
}

/// Decides the reply to each request.
pub type Script = dyn Fn(&Request<'_>) -> Reply + Send + Sync;

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Hit {
    /// Its `webhook-id`.
    pub id: String,
    /// Its `userId`.
    pub user: String,
    /// When it arrived.
    pub at: Instant,
    /// What it was answered.
    pub reply: Reply,
    /// Its body, as received.
    pub body: Bytes,
    /// Its `webhook-timestamp` and `webhook-signature` (empty when missing).
    pub signed: (String, String),
}

impl Hit {
    /// The line number in the message id `{job}:{line}`.
    pub fn line(&self) -> Option<u64> {
        self.id.rsplit_once(':')?.1.parse().ok()
    }
}

/// A GCRA bucket: `rate` per second with bursts of `burst`, like governor's.
#[derive(Debug)]
struct Gcra {
    interval: Duration,
    tolerance: Duration,
    tat: Option<Instant>,
}

impl Gcra {
    /// `Ok` or how long until a request would conform.
    fn check(&mut self, now: Instant) -> Result<(), Duration> {
        let tat = self.tat.unwrap_or(now).max(now);
        let earliest = tat.checked_sub(self.tolerance).unwrap_or(now);
        if now < earliest {
            return Err(earliest - now);
        }
        self.tat = Some(tat + self.interval);
        Ok(())
    }
}

struct Shared {
    script: Mutex<Arc<Script>>,
    hits: Mutex<Vec<Hit>>,
    per_id: Mutex<HashMap<String, u32>>,
    limit: Mutex<Option<Gcra>>,
}

/// The receiver: serves `POST /webhook` on 127.0.0.1 until dropped.
pub struct TestReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The panic message that closes a connection without an answer.
const RESET: &str = "test receiver: closing the connection without an answer";

impl TestReceiver {
    /// A receiver answering 200 to everything.
    pub fn start() -> TestReceiver {
        Self::with_script(|_| Reply::Ok)
    }

    /// A receiver following `script`.
    pub fn with_script(script: impl Fn(&Request<'_>) -> Reply + Send + Sync + 'static) -> Self {
        quiet_resets();
        let shared = Arc::new(Shared {
            script: Mutex::new(Arc::new(script)),
            hits: Mutex::new(Vec::new()),
            per_id: Mutex::new(HashMap::new()),
            limit: Mutex::new(None),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/webhook", post(webhook))
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("test receiver runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            // Stalled handlers must not hold the test up.
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        TestReceiver {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The webhook URL, for `WDS_WEBHOOK_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Replaces the script (applies to requests from now on).
    pub fn set_script(&self, script: impl Fn(&Request<'_>) -> Reply + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    /// Answers 429 (with `Retry-After`) to requests above `rate` per second
    /// with bursts of `burst`, before the script is asked.
    pub fn limit(&self, rate: u32, burst: u32) {
        let interval = Duration::from_secs(1) / rate.max(1);
        *self.shared.limit.lock().unwrap() = Some(Gcra {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            tat: None,
        });
    }

    /// Every request so far, in arrival order.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        self.shared.hits.lock().unwrap().len()
    }

    /// Requests per `webhook-id`.
    pub fn per_id(&self) -> HashMap<String, u32> {
        self.shared.per_id.lock().unwrap().clone()
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A webhook request's `webhook-id` and body `userId` (empty when missing).
pub(crate) fn id_and_user(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let user = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["userId"].as_str().map(str::to_string))
        .unwrap_or_default();
    (id, user)
}

async fn webhook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, user) = id_and_user(&headers, &body);
    let now = Instant::now();
    let limited = match shared.limit.lock().unwrap().as_mut() {
        Some(gcra) => gcra.check(now).err(),
        None => None,
    };
    let reply = {
        let mut per_id = shared.per_id.lock().unwrap();
        let nth = per_id.entry(id.clone()).or_insert(0);
        *nth += 1;
        let mut hits = shared.hits.lock().unwrap();
        let reply = match limited {
            Some(wait) => Reply::TooMany {
                secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            },
            None => {
                let script = shared.script.lock().unwrap().clone();
                script(&Request {
                    id: &id,
                    user: &user,
                    nth: *nth,
                    total: hits.len() as u64 + 1,
                })
            }
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        hits.push(Hit {
            id,
            user,
            at: now,
            reply: reply.clone(),
            body: body.clone(),
            signed: (header("webhook-timestamp"), header("webhook-signature")),
        });
        reply
    };
    match reply {
        Reply::Ok => StatusCode::OK.into_response(),
        Reply::Status(s) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "scripted failure",
        )
            .into_response(),
        Reply::TooMany { secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Stall(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        // Unwinding out of the handler ends the connection's task, so hyper
        // drops the socket without writing a response.
        Reply::Reset => std::panic::panic_any(RESET),
    }
}

/// Keeps the scripted resets out of the test output; every other panic is
/// reported as usual.
fn quiet_resets() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&RESET) {
                previous(info);
            }
        }));
    });
}

/// The largest number of `times` in any window of `window`. The times are
/// sorted first: requests handled on several threads are recorded a little
/// out of order, and a sliding window over unsorted times undercounts.
pub fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_window_counts_out_of_order_times() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Three within 100 ms, recorded out of order.
        let times = [ms(0), ms(500), ms(520), ms(10), ms(540)];
        assert_eq!(max_in_window(&times, Duration::from_millis(100)), 3);
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 5);
        assert_eq!(max_in_window(&[], Duration::from_secs(1)), 0);
    }
}
