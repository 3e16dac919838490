//! [`Instrument`]: a tracing span around every call.

use std::fmt;

use async_trait::async_trait;
use tracing::Instrument as _;

use crate::error::SinkError;
use crate::model::Message;
use crate::sink::{Delivered, Sink};

/// A sink that runs each call of the sink it wraps inside a span made for
/// its message, and records the call's outcome in the span's `outcome`
/// field when it has one; made by
/// [`SinkExt::instrument`](super::SinkExt::instrument) and
/// [`SinkExt::traced`](super::SinkExt::traced).
pub struct Instrument<S, F> {
    inner: S,
    make_span: F,
}

impl<S, F> Instrument<S, F> {
    /// Wraps `inner`, running each call in the span `make_span` makes.
    pub fn new(inner: S, make_span: F) -> Self {
        Instrument { inner, make_span }
    }

    /// The wrapped sink.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped sink, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, F> fmt::Debug for Instrument<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrument")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S, F> Sink for Instrument<S, F>
where
    S: Sink,
    F: Fn(&Message) -> tracing::Span + Send + Sync + 'static,
{
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        let span = (self.make_span)(message);
        let result = self.inner.deliver(message).instrument(span.clone()).await;
        // A no-op when the span has no such field or is disabled.
        span.record("outcome", super::ext::outcome(&result));
        result
    }
}

/// The span of [`SinkExt::traced`](super::SinkExt::traced).
pub(super) fn deliver_span(message: &Message) -> tracing::Span {
    tracing::info_span!(
        "deliver",
        message = %message.id,
        attempt = message.attempts + 1,
        outcome = tracing::field::Empty,
    )
}
