#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attributes;
pub mod backend;
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
mod workers;

/// The attribute that implements WDS's traits (`#[async_trait]` on an
/// `impl Sink for …`), re-exported so that implementing one needs no
/// dependency of your own.
pub use async_trait::async_trait;
pub use attributes::{
    AttributeError, Attributes, MAX_ATTRIBUTES, MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTE_NAME_BYTES,
    RESERVED_NAMES,
};
pub use engine::builder::{Engine, EngineBuilder};
pub use engine::config::{DeliveryMode, EngineConfig};
pub use error::{BoxError, Error, Result, SinkError};
pub use layer::ext::{Layer, SinkExt};
pub use model::{
    DeadKind, DeadLetter, DeadReason, Format, JobId, JobMeta, JobReport, JobState, Message,
    MessageId,
};
pub use sink::{Delivered, Sink};
pub use source::channel::{ChannelSource, Submitter};
#[cfg(feature = "folder")]
pub use source::folder::FolderSource;
pub use source::input::{Input, InputData, Source};
