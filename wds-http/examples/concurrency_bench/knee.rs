//! A webhook receiver with a knee: it serves at most `k` requests at once
//! in `service` each and queues the rest (so latency grows with the calls
//! in flight past `k`), and answers 503 at once to a request that finds
//! more than `4k` in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The receiver's counters.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) ok: AtomicU64,
    pub(crate) unavailable: AtomicU64,
}

#[derive(Debug)]
struct Knee {
    serving: Semaphore,
    in_flight: AtomicUsize,
    refuse_above: usize,
    service: Duration,
    counts: Arc<Counts>,
}

/// A running receiver.
#[derive(Debug)]
pub(crate) struct KneeReceiver {
    pub(crate) addr: SocketAddr,
    pub(crate) counts: Arc<Counts>,
    stop: CancellationToken,
}

impl KneeReceiver {
    /// Serves `k` requests at once in `service` each, 503 past `4k` in flight.
    pub(crate) async fn start(k: usize, service: Duration) -> std::io::Result<Self> {
        let counts = Arc::new(Counts::default());
        let knee = Arc::new(Knee {
            serving: Semaphore::new(k),
            in_flight: AtomicUsize::new(0),
            refuse_above: 4 * k,
            service,
            counts: counts.clone(),
        });
        let app = Router::new()
            .route("/webhook", post(serve))
            .with_state(knee);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await;
        });
        Ok(KneeReceiver { addr, counts, stop })
    }

    /// The webhook URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// 200s and 503s answered so far.
    pub(crate) fn answered(&self) -> (u64, u64) {
        (
            self.counts.ok.load(Ordering::Acquire),
            self.counts.unavailable.load(Ordering::Acquire),
        )
    }
}

impl Drop for KneeReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One request in flight; counted out however its handler ends (a client
/// that gave up drops it mid-wait).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve(State(knee): State<Arc<Knee>>) -> StatusCode {
    let in_flight = knee.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let _counted = InFlight(&knee.in_flight);
    if in_flight > knee.refuse_above {
        knee.counts.unavailable.fetch_add(1, Ordering::AcqRel);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    // Never closed.
    let _serving = knee.serving.acquire().await;
    tokio::time::sleep(knee.service).await;
    knee.counts.ok.fetch_add(1, Ordering::AcqRel);
    StatusCode::OK
}
