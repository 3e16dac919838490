//! [`HttpSink`]: delivers each message as a signed Standard Webhooks call.

use crate::redact::redact_url;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Client, Response, Url};
use serde::Serialize;
use wds_core::{Delivered, Message, Sink, SinkError};

use crate::classify;
use crate::signature::{self, Secret, SecretError};

/// The header carrying the message id (the idempotency key).
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the attempt's unix time in seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The `user-agent` of every call.
pub(crate) const USER_AGENT: &str = concat!("wds-http/", env!("CARGO_PKG_VERSION"));

/// The request timeout when none is set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a response body is read so that its keep-alive connection can
/// go back to the pool; a larger body is abandoned with its connection.
pub(crate) const DRAIN_LIMIT: usize = 64 * 1024;

/// Headers the sink sets itself, which `header()` may not override.
const RESERVED: [&str; 6] = [
    WEBHOOK_ID,
    WEBHOOK_TIMESTAMP,
    WEBHOOK_SIGNATURE,
    "content-type",
    "content-length",
    "host",
];

/// The webhook body, `{"userId": …, "alertMessage": …}` in that order,
/// then the message's attributes in theirs.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "userId")]
    user_id: &'a str,
    #[serde(rename = "alertMessage")]
    alert_message: &'a str,
    /// Flattened: each attribute is a top-level field (none can be named
    /// `userId` or `alertMessage`: [`wds_core::Attributes`] refuses them).
    #[serde(flatten)]
    attributes: &'a wds_core::Attributes,
}

/// A [`Sink`] that POSTs each message to one URL as JSON
/// `{"userId": …, "alertMessage": …}` (followed by the message's
/// [attributes](wds_core::Attributes), if any, as fields of their own in
/// file order) with the
/// [Standard Webhooks](https://www.standardwebhooks.com/) headers:
/// `webhook-id` (the message id, the same on every retry), `webhook-timestamp`
/// and, when secrets are configured, `webhook-signature`.
///
/// One pooled keep-alive [`reqwest::Client`] serves every call; cloning the
/// sink shares it. Redirects are not followed.
///
/// # Classification
///
/// | response | result |
/// | --- | --- |
/// | 2xx | `Ok(Delivered::with_status(status))` |
/// | 429 | [`SinkError::RateLimited`] with `Retry-After` (seconds or HTTP-date) |
/// | 408, 425, 5xx except 501, timeout, connection error | [`SinkError::Retryable`] |
/// | 3xx, 410, 501, other 4xx | [`SinkError::Permanent`] with the status and the start of the body |
///
/// ```no_run
/// # async fn demo(message: wds_core::Message) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wds_core::Sink;
///
/// let sink = wds_http::HttpSink::builder("http://127.0.0.1:9000/webhook")
///     .timeout(Duration::from_secs(5))
///     .secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
///     .build()?;
/// let delivered = sink.deliver(&message).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpSink {
    client: Client,
    url: Url,
    secrets: Arc<[Secret]>,
    timeout: Duration,
    /// Set by [`HttpSinkBuilder::hyper_client`]: calls go through it.
    #[cfg(feature = "hyper-client")]
    hyper: Option<crate::hyper_client::HyperClient>,
}

impl fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSink")
            .field("url", &redact_url(self.url.as_str()))
            .field("secrets", &self.secrets.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// Starts building a sink that posts to `url`.
    pub fn builder(url: impl Into<String>) -> HttpSinkBuilder {
        HttpSinkBuilder {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            secrets: Vec::new(),
            headers: Vec::new(),
            #[cfg(feature = "hyper-client")]
            hyper: false,
        }
    }

    /// The endpoint.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The JSON body sent for `message`: `{"userId": …, "alertMessage": …}`
    /// and then each of its attributes, in order, as a field of its own
    /// (`{"userId":"u1","alertMessage":"Shipped","orderId":"A-17","items":3}`).
    /// The signature covers these exact bytes.
    ///
    /// # Errors
    ///
    /// Never in practice (strings and JSON values always serialize); kept
    /// fallible so a failure is a [`SinkError::Permanent`] rather than a
    /// panic.
    pub fn body(message: &Message) -> Result<Vec<u8>, SinkError> {
        serde_json::to_vec(&Body {
            user_id: &message.user_id,
            alert_message: &message.alert_message,
            attributes: &message.attributes,
        })
        .map_err(|e| {
            SinkError::permanent(format!("cannot encode the webhook body: {e}")).with_source(e)
        })
    }

    async fn classify_response(&self, response: Response) -> Result<Delivered, SinkError> {
        let (status, retry_after) = (response.status(), classify::retry_after(response.headers()));
        // The status is the answer; the body is read for a refusal's reason,
        // and otherwise only so that the connection goes back to the pool.
        let body = read_prefix(response, classify::body_to_keep(status.as_u16()))
            .await
            .unwrap_or_default();
        classify::outcome(status, retry_after.as_deref(), &body)
    }

    fn transport_error(&self, e: reqwest::Error) -> SinkError {
        // The reason is logged and stored with dead letters: never the URL,
        // whose password or query may hold a key.
        let e = e.without_url();
        if e.is_builder() {
            // The request itself is malformed: sending it again cannot help.
            return SinkError::permanent(format!("cannot build the request: {}", chain(&e)))
                .with_source(e);
        }
        let reason = if e.is_timeout() {
            format!("no response within {:?}", self.timeout)
        } else if e.is_connect() {
            format!("connection failed: {}", chain(&e))
        } else {
            format!("request failed: {}", chain(&e))
        };
        // The reqwest error stays the source, for `source()` chains and
        // `is_timeout()`-style checks; the reason is what dead letters keep.
        SinkError::retryable(reason).with_source(e)
    }

    /// Posts `body` (JSON) to the sink's URL as one webhook with the id
    /// `id`, signed and classified exactly like a delivery: how an
    /// application sends a webhook of its own (a completion notice) through
    /// the same client, secrets and headers.
    ///
    /// # Errors
    ///
    /// As [`Sink::deliver`]; an `id` that cannot be a header value is
    /// [`SinkError::Permanent`].
    pub async fn post(&self, id: &str, body: Vec<u8>) -> Result<Delivered, SinkError> {
        let id_value = HeaderValue::from_str(id).map_err(|e| {
            SinkError::permanent(format!(
                "message id {id:?} cannot be sent in a webhook-id header"
            ))
            .with_source(e)
        })?;
        // A fresh timestamp per attempt (the spec's replay protection); the
        // id stays the same so the receiver can drop repeats.
        let now = signature::unix_seconds(SystemTime::now());
        // Room for every header of the call, the client's defaults too, so
        // that adding those does not grow the map.
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !self.secrets.is_empty() {
            let signatures = signature::sign(&self.secrets, id, &now.to_string(), &body);
            // Base64, commas and spaces only: always a valid header value.
            if let Ok(v) = HeaderValue::try_from(signatures) {
                headers.insert(WEBHOOK_SIGNATURE, v);
            }
        }
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(now));
        headers.insert(WEBHOOK_ID, id_value);
        #[cfg(feature = "hyper-client")]
        if let Some(hyper) = &self.hyper {
            return hyper.post(headers, body, self.timeout).await;
        }
        let request = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body);
        match request.send().await {
            Ok(response) => self.classify_response(response).await,
            Err(e) => Err(self.transport_error(e)),
        }
    }
}

#[async_trait]
impl Sink for HttpSink {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        self.post(&message.id.to_string(), Self::body(message)?)
            .await
    }
}

/// Reads the body, keeping at most `keep` bytes and reading at most
/// [`DRAIN_LIMIT`], so that a small body leaves the connection reusable.
async fn read_prefix(mut response: Response, keep: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut kept = Vec::new();
    let mut read = 0usize;
    while let Some(chunk) = response.chunk().await? {
        if !take_chunk(&mut kept, &mut read, keep, &chunk) {
            break;
        }
    }
    Ok(kept)
}

/// Counts a body's `chunk` as read and keeps what still fits in `keep`
/// bytes; false once more than [`DRAIN_LIMIT`] was read (the rest is
/// abandoned with the connection).
pub(crate) fn take_chunk(kept: &mut Vec<u8>, read: &mut usize, keep: usize, chunk: &[u8]) -> bool {
    if kept.len() < keep {
        let room = keep - kept.len();
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    *read += chunk.len();
    *read <= DRAIN_LIMIT
}

/// An error and its sources, joined with `: ` (reqwest puts the useful part,
/// such as "connection refused", in the sources).
pub(crate) fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Builds an [`HttpSink`]; see [`HttpSink::builder`].
#[derive(Clone)]
#[must_use = "call build() to get the sink"]
pub struct HttpSinkBuilder {
    url: String,
    timeout: Duration,
    secrets: Vec<String>,
    headers: Vec<(String, String)>,
    #[cfg(feature = "hyper-client")]
    hyper: bool,
}

impl fmt::Debug for HttpSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSinkBuilder")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("secrets", &self.secrets.len())
            .field("headers", &self.headers)
            .finish()
    }
}

impl HttpSinkBuilder {
    /// The whole-request timeout (connect, send, response); default 10 s.
    /// A call that runs out of time is [`SinkError::Retryable`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds a signing secret (`whsec_<base64>`). Each secret adds one
    /// signature to `webhook-signature`, in the order added.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// Adds several signing secrets, e.g. the old and the new one during a
    /// key rotation.
    pub fn secrets<I, S>(mut self, secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.secrets.extend(secrets.into_iter().map(Into::into));
        self
    }

    /// Sends through hyper's own pooled client instead of reqwest: the
    /// same requests, headers, timeout and classification, for less CPU
    /// per call (about 0.7× in `bench` scenario 7). Plain `http://` URLs
    /// without credentials only: [`HttpSinkBuilder::build`] refuses an
    /// https URL or one with a user or password
    /// ([`BuildError::HyperClientLimits`]); keep the default client for
    /// those.
    #[cfg(feature = "hyper-client")]
    pub fn hyper_client(mut self) -> Self {
        self.hyper = true;
        self
    }

    /// Adds a header sent with every call (for example an API key). The
    /// Standard Webhooks headers, `content-type`, `content-length` and
    /// `host` are the sink's own and cannot be set here.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Validates the settings and builds the client.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for a URL that does not parse or is not http(s) (https
    /// needs the `rustls` feature), a secret that is not a valid `whsec_`
    /// secret, an invalid or reserved header, or a zero timeout.
    pub fn build(self) -> Result<HttpSink, BuildError> {
        let url = Url::parse(self.url.trim()).map_err(|e| BuildError::InvalidUrl {
            url: redact_url(&self.url),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "http" => {}
            "https" if cfg!(feature = "rustls") => {}
            "https" => return Err(BuildError::HttpsDisabled),
            other => {
                return Err(BuildError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        }
        let has_host = matches!(url.host_str(), Some(host) if !host.is_empty());
        if !has_host {
            return Err(BuildError::InvalidUrl {
                url: redact_url(&self.url),
                reason: "the URL has no host".into(),
            });
        }
        if self.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        let secrets = Secret::parse_all(&self.secrets)
            .map_err(|(index, source)| BuildError::InvalidSecret { index, source })?;
        let mut extra = HeaderMap::new();
        for (name, value) in &self.headers {
            let invalid = |reason: String| BuildError::InvalidHeader {
                name: name.clone(),
                reason,
            };
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| invalid(e.to_string()))?;
            if RESERVED.contains(&header.as_str()) {
                return Err(invalid("the sink sets this header itself".into()));
            }
            let value = HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
            extra.append(header, value);
        }
        #[cfg(feature = "hyper-client")]
        let hyper = match self.hyper {
            true => Some(crate::hyper_client::HyperClient::new(
                &url,
                extra.clone(),
                self.timeout,
            )?),
            false => None,
        };
        let client = Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .default_headers(extra)
            .build()
            .map_err(|e| BuildError::Client(Box::new(e)))?;
        Ok(HttpSink {
            client,
            url,
            secrets: secrets.into(),
            timeout: self.timeout,
            #[cfg(feature = "hyper-client")]
            hyper,
        })
    }
}

/// Why [`HttpSinkBuilder::build`] failed. None of these is retryable: fix
/// the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The URL does not parse or has no host.
    #[error("invalid webhook URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, its password and query masked
        /// ([`redact_url`](crate::redact_url)).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's scheme is neither http nor https.
    #[error("unsupported URL scheme {scheme:?}: use http or https")]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
    },
    /// An https URL was given but the crate was built without `rustls`.
    #[error("https URLs need wds-http's `rustls` feature")]
    HttpsDisabled,
    /// A secret is not a valid `whsec_` secret.
    #[error("signing secret #{index} is invalid: {source}")]
    InvalidSecret {
        /// Its position among the secrets added (from 0).
        index: usize,
        /// What is wrong with it.
        #[source]
        source: SecretError,
    },
    /// An extra header has an invalid or reserved name, or an invalid value.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The timeout is zero, so every call would fail.
    #[error("the request timeout must be greater than zero")]
    ZeroTimeout,
    /// `HttpSinkBuilder::hyper_client` (feature `hyper-client`) was asked for a URL it does not
    /// serve: https, or one with a user or password.
    #[error("the hyper client sends plain http:// to URLs without credentials; use the default client for {what}")]
    HyperClientLimits {
        /// What the URL has that the hyper client does not serve.
        what: &'static str,
    },
    /// The HTTP client could not be created (e.g. TLS initialization failed).
    #[error("cannot create the HTTP client: {0}")]
    Client(#[source] Box<dyn StdError + Send + Sync>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use wds_core::{Attributes, JobId};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn body_is_exactly_user_id_and_alert_message() {
        let mut m = Message::fresh(&JobId::new("j"), 3, "u\"1", "hi, there");
        m.attempts = 2;
        m.first_attempt_ms = Some(5);
        let body = HttpSink::body(&m).unwrap();
        assert_eq!(body, br#"{"userId":"u\"1","alertMessage":"hi, there"}"#);
    }

    #[test]
    fn attributes_follow_in_file_order_as_fields_of_their_own() {
        let attributes = Attributes::try_from_pairs([
            ("zip", serde_json::json!("75001")),
            ("items", serde_json::json!(3)),
            ("gift", serde_json::json!({"wrap": true})),
            ("alertmessage", serde_json::json!(null)),
        ])
        .unwrap();
        let m = Message::fresh(&JobId::new("j"), 3, "u1", "Shipped").with_attributes(attributes);
        let body = HttpSink::body(&m).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"userId":"u1","alertMessage":"Shipped","zip":"75001","items":3,"gift":{"wrap":true},"alertmessage":null}"#
        );
    }

    #[test]
    fn builder_rejects_bad_settings_clearly() {
        let err = |b: HttpSinkBuilder| b.build().unwrap_err().to_string();
        assert!(err(HttpSink::builder("not a url")).contains("invalid webhook URL"));
        assert!(err(HttpSink::builder("ftp://x/y")).contains("unsupported URL scheme"));
        let e = err(HttpSink::builder("http://h/").secret("s3cret"));
        assert!(e.contains("#0") && e.contains("whsec_"), "{e}");
        let e = err(HttpSink::builder("http://h/").secrets([SECRET, "whsec_???"]));
        assert!(e.contains("#1") && e.contains("base64"), "{e}");
        let e = err(HttpSink::builder("http://h/").header("webhook-id", "x"));
        assert!(e.contains("sets this header itself"), "{e}");
        let e = err(HttpSink::builder("http://h/").header("bad name", "x"));
        assert!(e.contains("invalid header"), "{e}");
        let e = err(HttpSink::builder("http://h/").timeout(Duration::ZERO));
        assert!(e.contains("greater than zero"), "{e}");
        let sink = HttpSink::builder(" http://127.0.0.1:1/hook ")
            .secret(SECRET)
            .header("x-api-key", "k")
            .build()
            .unwrap();
        assert_eq!(sink.url().as_str(), "http://127.0.0.1:1/hook");
        assert_eq!(sink.timeout(), DEFAULT_TIMEOUT);
        assert!(!format!("{sink:?}").contains("MfKQ"));
    }

    #[test]
    fn https_follows_the_rustls_feature() {
        let r = HttpSink::builder("https://example.invalid/hook").build();
        if cfg!(feature = "rustls") {
            assert!(r.is_ok());
        } else {
            assert!(matches!(r, Err(BuildError::HttpsDisabled)));
        }
    }
}
