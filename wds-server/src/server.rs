//! Serving a router with limits no peer can get around: how long a client
//! may take to send its headers, to send its request (body included), or to
//! sit idle on a connection, and how many connections are open at once.
//!
//! Every server of this crate (the control API, the receiver) and the
//! worker's metrics endpoint in `examples/full_system` serve through
//! [`serve`].
//!
//! # The connection cap
//!
//! At [`ServerLimits::max_connections`] open connections, a new connection
//! takes the place of the one that has been idle longest (no request in
//! progress: not yet sent its headers, or waiting between two requests),
//! which is closed. When every connection is busy with a request, the new
//! one waits: further connections wait in the kernel's listen backlog,
//! costing no descriptor of the process, until a request ends. So a peer
//! that opens connections and sends nothing cannot lock anyone out (a probe
//! of `/healthz` is answered at once), the process holds at most
//! `max_connections + 1` client sockets however many a peer opens, and the
//! timeouts bound how long a busy connection can keep its place.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Timeouts and the connection cap of one HTTP server; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// How long a client may take to send a request's headers (default
    /// 10 s). Slow-header ("slowloris") connections are closed after it.
    pub header_timeout: Duration,
    /// How long a connection may sit with no byte read or written, between
    /// requests or within one (default 60 s).
    pub idle_timeout: Duration,
    /// How long one request may take from its headers to its answer, its
    /// body included (default 60 s; the control API's default is 15 min,
    /// for uploads). Past it the answer is `408` and the connection closes.
    pub request_timeout: Duration,
    /// Connections open at once (default 512); more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

impl ServerLimits {
    /// Checks that every limit is positive.
    ///
    /// # Errors
    ///
    /// A message naming the limit that is zero.
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be > 0"));
            }
        }
        if self.max_connections == 0 {
            return Err("max_connections must be > 0".into());
        }
        Ok(())
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` fires,
/// then lets the requests in flight finish (each within `request_timeout`)
/// and returns. Handlers can read the client's address with
/// `ConnectInfo<SocketAddr>`.
///
/// # Errors
///
/// Only when the limits are invalid; failures to accept (such as running
/// out of descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    limits
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let cap = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(cap as usize));
    let open = Arc::new(Registry::default());
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: wait for a descriptor to free up
                    // rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Full: make room by closing the longest idle connection,
                // or wait for a busy one to finish.
                open.evict_longest_idle();
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (router, shutdown) = (router.clone(), shutdown.clone());
        let entry = open.enter();
        tokio::spawn(async move {
            connection(stream, peer, router, limits, &entry, shutdown).await;
            drop(entry);
            drop(slot);
        });
    }
    // Every slot back: every connection closed.
    let _ = slots.acquire_many(cap).await;
    Ok(())
}

/// One connection, until the client leaves, a limit closes it, or shutdown.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServerLimits,
    entry: &Entry,
    shutdown: CancellationToken,
) {
    let io = TokioIo::new(Idle::new(stream, limits.idle_timeout));
    let state = Arc::clone(&entry.state);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let busy = Busy::new(Arc::clone(&state));
        async move {
            let call = router.oneshot(request.map(axum::body::Body::new));
            let answer = match tokio::time::timeout(limits.request_timeout, call).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => too_slow(limits.request_timeout),
            };
            drop(busy);
            Ok::<_, Infallible>(answer)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // Closed to make room for a new connection while idle.
        () = entry.evicted.cancelled() => Ok(()),
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection closed");
    }
}

/// The open connections, so the longest idle one can be closed at the cap.
#[derive(Debug, Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (Arc<ConnState>, CancellationToken)>>,
}

/// Whether a connection is in a request, and since when it is not.
#[derive(Debug)]
struct ConnState {
    requests: AtomicU64,
    idle_since: Mutex<Instant>,
}

/// A connection's place in the [`Registry`]; leaves it on drop.
#[derive(Debug)]
struct Entry {
    id: u64,
    registry: Arc<Registry>,
    state: Arc<ConnState>,
    evicted: CancellationToken,
}

impl Registry {
    fn enter(self: &Arc<Self>) -> Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            requests: AtomicU64::new(0),
            idle_since: Mutex::new(Instant::now()),
        });
        let evicted = CancellationToken::new();
        self.lock()
            .insert(id, (Arc::clone(&state), evicted.clone()));
        Entry {
            id,
            registry: Arc::clone(self),
            state,
            evicted,
        }
    }

    /// Closes the connection idle for longest, if any is idle.
    fn evict_longest_idle(&self) {
        let mut open = self.lock();
        let oldest = open
            .iter()
            .filter(|(_, (state, _))| state.requests.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, (state, _))| *lock(&state.idle_since))
            .map(|(&id, _)| id);
        if let Some((_, evict)) = oldest.and_then(|id| open.remove(&id)) {
            evict.cancel();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (Arc<ConnState>, CancellationToken)>> {
        lock(&self.open)
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A request in progress on a connection; the connection is idle again
/// when the last one is dropped.
struct Busy(Arc<ConnState>);

impl Busy {
    fn new(state: Arc<ConnState>) -> Self {
        state.requests.fetch_add(1, Ordering::AcqRel);
        Busy(state)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *lock(&self.0.idle_since) = Instant::now();
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A lock that a panic elsewhere does not make unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `408` with a JSON error and `Connection: close`.
fn too_slow(limit: Duration) -> Response {
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        Json(serde_json::json!({
            "error": format!("the request took longer than {limit:?}")
        })),
    )
        .into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// A stream that fails with `TimedOut` once no byte moved either way for
/// `idle`: hyper then closes the connection.
#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(stream: TcpStream, idle: Duration) -> Self {
        Idle {
            stream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progressed(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// `Pending` unless the deadline passed, then the timeout error.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Idle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl AsyncWrite for Idle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.progressed();
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
