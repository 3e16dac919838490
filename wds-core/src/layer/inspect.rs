//! [`Inspect`]: a look at every call, for metrics and logs.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::SinkError;
use crate::model::Message;
use crate::sink::{Delivered, Sink};

/// A sink that calls a function after each call of the sink it wraps, with
/// the message, the result and the call's duration; made by
/// [`SinkExt::inspect`](super::SinkExt::inspect). The result is returned
/// as it is.
///
/// The function runs on the delivering task: keep it quick (count, log,
/// send to a channel), never block.
pub struct Inspect<S, F> {
    inner: S,
    f: F,
}

impl<S, F> Inspect<S, F> {
    /// Wraps `inner`, calling `f` after each call.
    pub fn new(inner: S, f: F) -> Self {
        Inspect { inner, f }
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

impl<S: fmt::Debug, F> fmt::Debug for Inspect<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspect")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S, F> Sink for Inspect<S, F>
where
    S: Sink,
    F: Fn(&Message, &Result<Delivered, SinkError>, Duration) + Send + Sync + 'static,
{
    async fn deliver(&self, message: &Message) -> Result<Delivered, SinkError> {
        let start = Instant::now();
        let result = self.inner.deliver(message).await;
        (self.f)(message, &result, start.elapsed());
        result
    }
}
