//! The minimal responder: an HTTP/1.1 server that reads each request's
//! body and answers `200` with an empty body, nothing else (no parsing, no
//! dedupe, no file). Run in a process of its own (`--responder`), it is a
//! receiver that is not the bottleneck, so the clients in front of it are
//! measured rather than the product receiver behind them.
//!
//! `GET /count` answers how many requests with a body it has answered.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Fallible;

/// Serves on `listener` until the process ends: prints `listening <addr>`
/// on stdout once it accepts.
pub(crate) async fn serve(listener: TcpListener) -> Fallible<()> {
    println!("listening {}", listener.local_addr()?);
    let answered = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, a reset before accept: keep serving.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let answered = answered.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answered = answered.clone();
                async move { Ok::<_, Infallible>(answer(request, &answered).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>, answered: &AtomicU64) -> Response<Full<Bytes>> {
    let count = request.method() == Method::GET && request.uri().path() == "/count";
    // Read the whole body, as any real endpoint must before answering.
    let read = request.into_body().collect().await.is_ok();
    let (status, body) = match (count, read) {
        (true, _) => (
            StatusCode::OK,
            Bytes::from(answered.load(Ordering::Relaxed).to_string()),
        ),
        (false, true) => {
            answered.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, Bytes::new())
        }
        (false, false) => (StatusCode::BAD_REQUEST, Bytes::new()),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}
