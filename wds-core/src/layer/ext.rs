//! [`SinkExt`] and [`Layer`] (re-exported at the crate root), and
//! [`layer_fn`].

use std::time::Duration;

use super::{Inspect, Instrument};
use crate::error::SinkError;
use crate::model::Message;
use crate::sink::{Delivered, Sink};

/// Wraps a sink in another: the building block of [`SinkExt::layer`], as
/// tower's `Layer` is of its services.
///
/// A layer holds what its wrappers share (a registry of metrics, a client)
/// and makes one wrapper per inner sink. The wrapper is a [`Sink`] that
/// follows the rules in [the `layer` module's documentation](crate::layer): no retries, the
/// inner result returned as it is.
///
/// # Order
///
/// `sink.layer(a).layer(b)` is `b` around `a` around `sink`: `b` sees a call
/// first and its result last. The pair `(a, b)` is a layer that does the
/// same, so `sink.layer((a, b))` is `sink.layer(a).layer(b)`.
pub trait Layer<S> {
    /// The wrapper.
    type Sink: Sink;

    /// Wraps `inner`.
    fn layer(&self, inner: S) -> Self::Sink;
}

/// `(inner, outer)`: `inner` wraps the sink first, `outer` wraps the result
/// (see [`Layer`]'s `# Order`).
impl<S, A, B> Layer<S> for (A, B)
where
    A: Layer<S>,
    B: Layer<A::Sink>,
{
    type Sink = B::Sink;

    fn layer(&self, inner: S) -> B::Sink {
        self.1.layer(self.0.layer(inner))
    }
}

/// A [`Layer`] from a function, for a wrapper that needs no shared state of
/// its own: `sink.layer(layer_fn(|inner: MySink| MyWrapper::new(inner)))`.
/// Name the inner sink's type in the closure's argument: the compiler
/// cannot infer it from the call.
pub fn layer_fn<F>(f: F) -> LayerFn<F> {
    LayerFn { f }
}

/// The [`Layer`] that [`layer_fn`] makes.
#[derive(Clone, Copy)]
pub struct LayerFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for LayerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFn").finish_non_exhaustive()
    }
}

impl<S, T, F> Layer<S> for LayerFn<F>
where
    F: Fn(S) -> T,
    T: Sink,
{
    type Sink = T;

    fn layer(&self, inner: S) -> T {
        (self.f)(inner)
    }
}

/// Wrappers for every [`Sink`]; see [the `layer` module's documentation](crate::layer) for
/// what a wrapper may do, and a [`Layer`] of one's own. Retries stay in the
/// engine.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use wds_core::{async_trait, Delivered, Message, Sink, SinkError, SinkExt};
///
/// #[derive(Debug)]
/// struct Flaky;
///
/// #[async_trait]
/// impl Sink for Flaky {
///     async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
///         match m.id.line % 2 {
///             0 => Ok(Delivered::with_status(200)),
///             _ => Err(SinkError::retryable("gateway timeout").with_status(504)),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let failed = Arc::new(AtomicU64::new(0));
/// let sink = Flaky
///     .inspect({
///         let failed = Arc::clone(&failed);
///         move |_message, result, _took| {
///             if result.is_err() {
///                 failed.fetch_add(1, Ordering::Relaxed);
///             }
///         }
///     })
///     .traced();
/// let job = wds_core::JobId::from_identity("example");
/// for line in 1..=4 {
///     let result = sink.deliver(&Message::fresh(&job, line, "u", "hi")).await;
///     // The wrappers hand the result back as it is: the engine classifies.
///     assert_eq!(result.is_ok(), line % 2 == 0);
/// }
/// assert_eq!(failed.load(Ordering::Relaxed), 2);
/// # }
/// ```
pub trait SinkExt: Sink {
    /// Calls `f` after each call with the message, the result and how long
    /// the call took: for metrics and logs. The result is returned as it is.
    fn inspect<F>(self, f: F) -> Inspect<Self, F>
    where
        Self: Sized,
        F: Fn(&Message, &Result<Delivered, SinkError>, Duration) + Send + Sync + 'static,
    {
        Inspect::new(self, f)
    }

    /// Runs each call in the span `make_span` makes for its message. When
    /// the span has a field `outcome` (declared as
    /// `outcome = tracing::field::Empty`), it is set to how the call went:
    /// `delivered`, `retryable`, `rate_limited` or `permanent`.
    fn instrument<F>(self, make_span: F) -> Instrument<Self, F>
    where
        Self: Sized,
        F: Fn(&Message) -> tracing::Span + Send + Sync + 'static,
    {
        Instrument::new(self, make_span)
    }

    /// Runs each call in an info-level span `deliver` with the fields
    /// `message` (the id), `attempt` (1 for the first) and `outcome` (as in
    /// [`instrument`](SinkExt::instrument)). No user data goes in the span.
    fn traced(self) -> Instrument<Self, fn(&Message) -> tracing::Span>
    where
        Self: Sized,
    {
        Instrument::new(self, super::trace::deliver_span)
    }

    /// Wraps this sink with `layer` (see [`Layer`]).
    fn layer<L>(self, layer: L) -> L::Sink
    where
        Self: Sized,
        L: Layer<Self>,
    {
        layer.layer(self)
    }
}

impl<S: Sink + ?Sized> SinkExt for S {}

/// The name of how a call went, as [`SinkExt::instrument`] records it:
/// `delivered`, or the error's [`SinkError::kind`].
pub(super) fn outcome(result: &Result<Delivered, SinkError>) -> &'static str {
    result
        .as_ref()
        .map_or_else(SinkError::kind, |_| "delivered")
}
