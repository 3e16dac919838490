//! The [`Sink`] trait: where messages are delivered.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::SinkError;
use crate::model::Message;

/// What a sink reports for a delivered message; the engine adds the attempt
/// number and latency to make a [`crate::backend::Receipt`].
///
/// `Delivered::default()` for a sink that has nothing to report,
/// [`Delivered::with_status`] for one that speaks HTTP (it is
/// `#[non_exhaustive]`, so that more can be reported later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivered {
    /// The response status, when the sink speaks HTTP.
    pub status: Option<u16>,
}

impl Delivered {
    /// Delivered, and the endpoint answered `status`.
    pub fn with_status(status: u16) -> Self {
        Delivered {
            status: Some(status),
        }
    }
}

/// Delivers one message and classifies the result.
///
/// # Contract
///
/// - `deliver` MUST return `Ok` only when the destination confirmed the message.
/// - It MUST classify failures: [`SinkError::Retryable`] when trying again may
///   work (5xx, timeouts, connection errors), [`SinkError::RateLimited`] for a
///   429 (with its `Retry-After`), [`SinkError::Permanent`] otherwise.
/// - It SHOULD send `message.id` as an idempotency key, so a destination can
///   drop a repeat caused by a retry after a lost response.
/// - It MUST NOT retry on its own: the engine owns retries, so that every
///   attempt is counted and rate-limited.
///
/// # Errors
///
/// Only [`SinkError`]; the engine never sees a panic as a result (a panicking
/// sink is a bug and is treated as a retryable failure).
///
/// # Cancel safety
///
/// The engine applies its own timeout around `deliver`; a dropped call MUST
/// leave nothing half-done on the sink's side that a later call would trip on.
#[async_trait]
pub trait Sink: Send + Sync + Debug + 'static {
    /// Delivers one message.
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError>;
}

#[async_trait]
impl<T: Sink + ?Sized> Sink for Arc<T> {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        (**self).deliver(message).await
    }
}

#[async_trait]
impl<T: Sink + ?Sized> Sink for Box<T> {
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        (**self).deliver(message).await
    }
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn Sink>) {}
