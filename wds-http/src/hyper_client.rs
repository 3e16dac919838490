//! The hyper transport of [`crate::HttpSink`] (feature `hyper-client`):
//! hyper's own pooled HTTP/1.1 client for plain `http://` endpoints, which
//! sends the same requests as the default reqwest client for less CPU per
//! call. The sink builds the headers (signatures included) and the body;
//! this sends them, reads the answer and classifies it exactly as the
//! reqwest path does.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, USER_AGENT};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use reqwest::Url;
use wds_core::{Delivered, SinkError};

use crate::classify;
use crate::sink::{chain, take_chunk, BuildError};

/// One pooled client and the endpoint it posts to.
#[derive(Clone)]
pub(crate) struct HyperClient {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    /// The builder's extra headers and the user agent, sent with every call.
    defaults: HeaderMap,
}

impl HyperClient {
    /// A client for `url` (http only, without credentials), connecting
    /// within `timeout`.
    pub(crate) fn new(
        url: &Url,
        mut defaults: HeaderMap,
        timeout: Duration,
    ) -> Result<Self, BuildError> {
        if url.scheme() != "http" {
            return Err(BuildError::HyperClientLimits { what: "https" });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BuildError::HyperClientLimits {
                what: "a URL with a user or password",
            });
        }
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e| BuildError::Client(Box::new(e)))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        defaults.insert(
            USER_AGENT,
            HeaderValue::from_static(crate::sink::USER_AGENT),
        );
        Ok(HyperClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            uri,
            defaults,
        })
    }

    /// Posts `body` with `headers` (the sink's own, after the defaults);
    /// the whole call, the answer's body included, within `timeout`.
    pub(crate) async fn post(
        &self,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Delivered, SinkError> {
        let mut request = Request::post(self.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| {
                SinkError::permanent(format!("cannot build the request: {e}")).with_source(e)
            })?;
        let all = request.headers_mut();
        all.extend(self.defaults.clone());
        all.extend(headers);
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::retryable(format!(
                "no response within {timeout:?}"
            ))),
        }
    }

    /// Sends `request`, reads the answer's body (its start kept for a
    /// refusal's reason, the rest drained up to `DRAIN_LIMIT`) and
    /// classifies it.
    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Delivered, SinkError> {
        let response = self.client.request(request).await.map_err(|e| {
            let reason = if e.is_connect() {
                format!("connection failed: {}", chain(&e))
            } else {
                format!("request failed: {}", chain(&e))
            };
            SinkError::retryable(reason).with_source(e)
        })?;
        let (status, retry_after) = (response.status(), classify::retry_after(response.headers()));
        let body = read_prefix(response, classify::body_to_keep(status.as_u16())).await;
        classify::outcome(status, retry_after.as_deref(), &body)
    }
}

/// The first `keep` bytes of the body, reading at most `DRAIN_LIMIT` (a
/// larger body is abandoned with its connection); what could be read when
/// the body fails midway.
async fn read_prefix(response: Response<Incoming>, keep: usize) -> Vec<u8> {
    let mut body = response.into_body();
    let (mut kept, mut read) = (Vec::new(), 0usize);
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(chunk) = frame.into_data() {
            if !take_chunk(&mut kept, &mut read, keep, &chunk) {
                break;
            }
        }
    }
    kept
}
