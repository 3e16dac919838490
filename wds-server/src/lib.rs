#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

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
