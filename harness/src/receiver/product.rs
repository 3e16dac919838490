//! [`ProductReceiver`]: the product's [`Receiver`] (verify, dedupe, CSV)
//! served in this process behind a thin layer that can answer late and that
//! notes when each webhook arrived: the benchmark's receiver.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wds_server::{Receiver, ReceiverConfig};

use crate::BoxError;

type Fallible<T> = Result<T, BoxError>;

/// Microseconds since `t0` at which each accepted webhook
/// arrived, roughly in arrival order (sort before use).
type Times = Arc<Mutex<Vec<u64>>>;

#[derive(Clone)]
struct Tap {
    delay: Option<Duration>,
    times: Option<Times>,
    t0: Instant,
}

/// Runs before and after the product's handler: waits `delay` (a slow API),
/// and notes when every `/webhook` answered 200 had arrived.
async fn tap(State(tap): State<Tap>, request: Request, next: Next) -> Response {
    let webhook = request.uri().path() == "/webhook";
    // The arrival time, as an API's own rate limiter would count it.
    let arrived = tap.t0.elapsed().as_micros() as u64;
    if let (true, Some(delay)) = (webhook, tap.delay) {
        tokio::time::sleep(delay).await;
    }
    let response = next.run(request).await;
    if let (true, Some(times), StatusCode::OK) = (webhook, &tap.times, response.status()) {
        times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(arrived);
    }
    response
}

/// A running receiver on a free port of 127.0.0.1; stop it with
/// [`ProductReceiver::stop`].
#[derive(Debug)]
pub struct ProductReceiver {
    /// `http://127.0.0.1:<port>/webhook`.
    pub url: String,
    receiver: Receiver,
    times: Option<Times>,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl ProductReceiver {
    /// Starts a receiver writing to `dir/<name>.csv` that accepts unsigned
    /// webhooks; `delay` makes every webhook answer that much later;
    /// `record` keeps the arrival times, in µs since `t0` (8 bytes per
    /// webhook: off for a big file).
    ///
    /// # Errors
    ///
    /// When the receiver cannot open its output or bind a port.
    pub async fn start(
        dir: &Path,
        name: &str,
        delay: Option<Duration>,
        record: bool,
        t0: Instant,
    ) -> Fallible<Self> {
        let mut config = ReceiverConfig::new(dir.join(format!("{name}.csv")));
        // Measures delivery, not signature checks.
        config.accept_unsigned = true;
        let receiver = Receiver::new(config)?;
        let times = record.then(|| Arc::new(Mutex::new(Vec::with_capacity(1 << 20))));
        let state = Tap {
            delay,
            times: times.clone(),
            t0,
        };
        let app = receiver
            .router()
            .layer(middleware::from_fn_with_state(state, tap));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/webhook", listener.local_addr()?);
        let stop = CancellationToken::new();
        let task = {
            let (stop, receiver) = (stop.clone(), receiver.clone());
            tokio::spawn(async move {
                // `Receiver::serve` would flush on its own; serving the router
                // ourselves, we flush the output on the same 200 ms period.
                let flusher = {
                    let stop = stop.clone();
                    async move {
                        while !stop.is_cancelled() {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            }
                            if let Err(e) = receiver.flush() {
                                eprintln!("product receiver: {e}");
                            }
                        }
                    }
                };
                let serve =
                    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
                let (served, ()) = tokio::join!(async { serve.await }, flusher);
                served
            })
        };
        Ok(ProductReceiver {
            url,
            receiver,
            times,
            stop,
            task,
        })
    }

    /// Webhooks accepted (recorded once) so far.
    pub fn accepted(&self) -> u64 {
        self.receiver.accepted()
    }

    /// Repeated `webhook-id`s dropped so far (must stay 0).
    pub fn duplicates(&self) -> u64 {
        self.receiver.duplicates()
    }

    /// How many answer times are noted.
    pub fn noted(&self) -> usize {
        self.times
            .as_ref()
            .map_or(0, |t| t.lock().unwrap_or_else(|p| p.into_inner()).len())
    }

    /// The answer times noted from index `from` on (µs since the start).
    pub fn times_from(&self, from: usize) -> Vec<u64> {
        self.times.as_ref().map_or_else(Vec::new, |t| {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            t.get(from..).map(<[u64]>::to_vec).unwrap_or_default()
        })
    }

    /// Waits until `target` webhooks were accepted, at most `timeout`.
    ///
    /// # Errors
    ///
    /// When fewer arrived in time.
    pub async fn wait_for(&self, target: u64, timeout: Duration) -> Fallible<()> {
        let give_up = Instant::now() + timeout;
        while self.accepted() < target {
            if Instant::now() > give_up {
                return Err(format!(
                    "the receiver got {} of {target} webhooks within {timeout:?}",
                    self.accepted()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("product receiver: {e}"),
            Err(e) => eprintln!("product receiver: {e}"),
        }
    }
}
