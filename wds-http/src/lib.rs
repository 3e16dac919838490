//! # wds-http
//!
//! WDS's webhook client:
//!
//! - [`HttpSink`], a [`wds_core::Sink`] that calls a webhook with
//!   `{"userId": …, "alertMessage": …}` and the
//!   [Standard Webhooks](https://www.standardwebhooks.com/) headers
//!   (`webhook-id`, `webhook-timestamp`, `webhook-signature`), and classifies
//!   the response into delivered, retryable, rate limited or permanent;
//! - [`signature`], the signing scheme, which receivers verify with too;
//! - [`redact_url`], for logging a URL without its secrets.
//!
//! It is light on purpose: a reqwest client and the hashing it signs with,
//! no web server. The servers (the control API, the status page, the
//! webhook receiver, Prometheus metrics) are in `wds-server`.
//!
//! # Features
//!
//! - `rustls` (default): https URLs for the sink, through rustls. Plain http
//!   works without it.

mod classify;
mod redact;
pub mod signature;
mod sink;

pub use redact::redact_url;
pub use signature::{Secret, SecretError, VerifyError};
pub use sink::{
    BuildError, HttpSink, HttpSinkBuilder, DEFAULT_TIMEOUT, WEBHOOK_ID, WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
};
/// The core traits and model, so one `cargo add wds-http` is enough.
pub use wds_core;
