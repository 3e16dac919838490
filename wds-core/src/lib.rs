#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attributes;
mod control;
pub mod engine;
mod error;
pub mod health;
pub mod layer;
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
pub mod workers;

/// The attribute that implements WDS's traits (`#[async_trait]` on an
/// `impl Sink for …`), re-exported so that implementing one needs no
/// dependency of your own.
pub use async_trait::async_trait;
pub use attributes::{
    AttributeError, Attributes, MAX_ATTRIBUTES, MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTE_NAME_BYTES,
    RESERVED_NAMES,
};
pub use control::{Action, JobControl};
pub use engine::{Batcher, Deliverer, DeliveryMode, Engine, EngineBuilder, EngineConfig};
pub use error::{BoxError, Error, Result, SinkError};
pub use layer::{Layer, SinkExt};
pub use limiter::{Limiter, LocalLimiter};
pub use model::*;
pub use offsets::{OffsetStore, DEFAULT_DETAIL_LIMIT, DETAIL_NOT_KEPT};
pub use queue::{Continue, Continued, Queue};
pub use sink::{Delivered, Sink};
#[cfg(feature = "folder")]
pub use source::FolderSource;
pub use source::{ChannelSource, Input, InputData, IntakeStatus, Source, Submitter};
