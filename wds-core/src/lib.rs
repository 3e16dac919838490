//! # wds-core
//!
//! The core of WDS, a webhook delivery system: it turns files of users into
//! webhook calls, fast, within a rate limit, across many machines, with proof
//! that nobody was missed and nobody was alerted twice.
//!
//! This crate holds the domain model, the four pluggable traits and the
//! engine that drives them:
//!
//! - [`Source`] yields complete inputs (a watched folder, or a channel fed from code);
//! - [`Queue`] holds ready messages and leases them to workers in batches;
//! - [`OffsetStore`] records what each job has done (claims, checkpoints, outcomes);
//! - [`Sink`] delivers one message and classifies the result.
//!
//! The [`Batcher`] reads inputs into the queue; the [`Deliverer`] leases batches
//! and calls the sink under a rate limit with retries; [`Engine`] runs both.
//! Backends live in their own crates (`wds-memory`, `wds-redis`, `wds-http`).
//!
//! See the repository's `docs/guarantees.md` for the guarantees G1–G5.

mod control;
pub mod engine;
mod error;
pub mod health;
pub mod limiter;
mod model;
mod offsets;
pub mod parse;
mod queue;
pub mod retry;
mod sink;
pub mod source;
#[cfg(feature = "testkit")]
pub mod testkit;

/// The attribute that implements WDS's traits (`#[async_trait]` on an
/// `impl Sink for …`), re-exported so that implementing one needs no
/// dependency of your own.
pub use async_trait::async_trait;
pub use control::{Action, JobControl};
pub use engine::{Batcher, Deliverer, DeliveryMode, Engine, EngineBuilder, EngineConfig};
pub use error::{BoxError, Error, Result, SinkError};
pub use limiter::{Limiter, LocalLimiter};
pub use model::*;
pub use offsets::{OffsetStore, DEFAULT_DETAIL_LIMIT, DETAIL_NOT_KEPT};
pub use queue::{Continue, Continued, Queue};
pub use sink::{Delivered, Sink};
#[cfg(feature = "folder")]
pub use source::FolderSource;
pub use source::{ChannelSource, Input, InputData, IntakeStatus, Source, Submitter};
