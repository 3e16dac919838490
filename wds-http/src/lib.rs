//! # wds-http
//!
//! WDS over HTTP:
//!
//! - [`HttpSink`], a [`wds_core::Sink`] that calls a webhook with
//!   `{"userId": …, "alertMessage": …}` and the
//!   [Standard Webhooks](https://www.standardwebhooks.com/) headers
//!   (`webhook-id`, `webhook-timestamp`, `webhook-signature`), and classifies
//!   the response into delivered, retryable, rate limited or permanent;
//! - [`Receiver`], the webhook receiver (the "alert notifier"): verifies
//!   signatures, rate-limits per client, drops repeated `webhook-id`s and
//!   appends each alert to a CSV file;
//! - [`signature`], the signing scheme both of them use;
//! - [`ControlApi`], the initiator's control API: upload, retry, jobs,
//!   health and Prometheus [`Metrics`] (with [`Metered`], a sink wrapper
//!   that counts every call).
//!
//! # Features
//!
//! - `rustls` (default): https URLs for the sink, through rustls. Plain http
//!   works without it.

mod classify;
pub mod control;
pub mod metrics;
pub mod receiver;
mod redact;
pub mod server;
pub mod signature;
mod sink;

pub use control::{ControlApi, ControlConfig, Resender};
pub use metrics::{Metered, Metrics};
pub use receiver::{serve, FlushPolicy, Receiver, ReceiverConfig, ReceiverError};
pub use redact::redact_url;
pub use server::ServerLimits;
pub use signature::{Secret, SecretError, VerifyError};
pub use sink::{
    BuildError, HttpSink, HttpSinkBuilder, DEFAULT_TIMEOUT, WEBHOOK_ID, WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
};
/// The core traits and model, so one `cargo add wds-http` is enough.
pub use wds_core;
