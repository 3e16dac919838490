#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
#[cfg(feature = "hyper-client")]
mod hyper_client;
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
