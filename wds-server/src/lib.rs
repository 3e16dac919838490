//! # wds-server
//!
//! The servers of WDS, on axum:
//!
//! - [`ControlApi`], the initiator's control API: uploads, jobs and their
//!   lines, job control (pause, resume, cancel, replay, resend), the status
//!   page at `/`, receipts on request, health, Prometheus [`Metrics`] (with
//!   [`Metered`], a sink wrapper that counts every call) and its OpenAPI
//!   description at `/openapi.json`;
//! - [`Receiver`], the webhook receiver (the "alert notifier"): verifies
//!   signatures (with `wds_http::signature`), rate-limits per client, drops
//!   repeated `webhook-id`s and appends each alert to a CSV file;
//! - [`server`], the timeouts and the connection cap every one of them
//!   serves with ([`ServerLimits`]).
//!
//! The webhook client, [`wds_http::HttpSink`], is in `wds-http`, so that a
//! service that only sends webhooks does not build a web server.

pub mod control;
pub mod metrics;
pub mod receiver;
pub mod server;

pub use control::{ControlApi, ControlConfig, Resender};
pub use metrics::{Metered, Metrics};
pub use receiver::{serve, FlushPolicy, Receiver, ReceiverConfig, ReceiverError};
pub use server::ServerLimits;
/// The webhook client and the signatures the receiver verifies.
pub use wds_http;
