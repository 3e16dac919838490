//! Wrapping a [`Sink`]: metrics, logging, tracing and routing as small
//! wrappers around the sink that does the work, in the manner of tower's
//! layers.
//!
//! [`SinkExt`] (implemented for every sink) adds the wrappers this crate
//! ships: [`inspect`](SinkExt::inspect) (see each call's outcome and
//! latency), [`traced`](SinkExt::traced) and
//! [`instrument`](SinkExt::instrument) (a tracing span per call), and
//! [`layer`](SinkExt::layer) for a [`Layer`] of your own. [`Router`] picks
//! one of several sinks per message.
//!
//! # What a layer may do
//!
//! - It MUST NOT retry. The engine owns retries, so that every attempt is
//!   counted, rate-limited, spaced out and stopped at the limits; a layer
//!   that loops hides attempts from all of that. A layer calls its inner
//!   sink at most once per call it gets.
//! - It MUST return the inner sink's result as it is: the same `Ok`, or the
//!   same [`SinkError`] with its variant (its classification), status and
//!   source unchanged. A layer that turns a permanent failure into a
//!   retryable one makes the engine retry what cannot work, and the other
//!   way round dead-letters what would have worked.
//! - It MAY refuse a message without calling the inner sink, with a
//!   classification of its own (as [`Router`] does for a message with no
//!   route), and MAY look at or record anything on the way.
//! - It keeps the [`Sink`] contract: cancel safe (the engine drops a call
//!   at its timeout), callable concurrently, no panic on bad data.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use wds_core::{async_trait, Delivered, Layer, Message, Sink, SinkError, SinkExt};
//!
//! /// Counts the calls that failed, whatever their kind.
//! #[derive(Debug, Clone, Default)]
//! struct CountFailures(Arc<AtomicU64>);
//!
//! #[derive(Debug)]
//! struct Counted<S> {
//!     inner: S,
//!     failures: Arc<AtomicU64>,
//! }
//!
//! impl<S: Sink> Layer<S> for CountFailures {
//!     type Sink = Counted<S>;
//!     fn layer(&self, inner: S) -> Counted<S> {
//!         Counted { inner, failures: Arc::clone(&self.0) }
//!     }
//! }
//!
//! #[async_trait]
//! impl<S: Sink> Sink for Counted<S> {
//!     async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
//!         let result = self.inner.deliver(m).await;
//!         if result.is_err() {
//!             self.failures.fetch_add(1, Ordering::Relaxed);
//!         }
//!         result // as it is: no retry, no reclassification
//!     }
//! }
//!
//! /// A destination that refuses users whose id starts with "x".
//! #[derive(Debug)]
//! struct Sms;
//!
//! #[async_trait]
//! impl Sink for Sms {
//!     async fn deliver(&self, m: &Message) -> Result<Delivered, SinkError> {
//!         if m.user_id.starts_with('x') {
//!             return Err(SinkError::permanent("no such number").with_status(404));
//!         }
//!         Ok(Delivered::default())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let failures = CountFailures::default();
//! let sink = Sms
//!     .layer(failures.clone())
//!     .inspect(|m, result, took| {
//!         if let Err(e) = result {
//!             eprintln!("{} failed after {took:?}: {e}", m.id);
//!         }
//!     })
//!     .traced();
//! // `sink` is a `Sink`: hand it to `Engine::builder().sink(sink)`.
//! # let job = wds_core::JobId::from_identity("example");
//! # let message = |user: &str| Message::fresh(&job, 1, user, "hello");
//! assert!(sink.deliver(&message("u1")).await.is_ok());
//! let refused = sink.deliver(&message("x1")).await.unwrap_err();
//! assert!(!refused.is_retryable()); // the classification came through
//! assert_eq!(refused.status(), Some(404));
//! assert_eq!(failures.0.load(Ordering::Relaxed), 1);
//! # }
//! ```

mod inspect;
mod route;
mod trace;

use std::time::Duration;

pub use inspect::Inspect;
pub use route::Router;
pub use trace::Instrument;

use crate::error::SinkError;
use crate::model::Message;
use crate::sink::{Delivered, Sink};

/// Wraps a sink in another: the building block of [`SinkExt::layer`], as
/// tower's `Layer` is of its services.
///
/// A layer holds what its wrappers share (a registry of metrics, a client)
/// and makes one wrapper per inner sink. The wrapper is a [`Sink`] that
/// follows the rules in [the module's documentation](self): no retries, the
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

/// Wrappers for every [`Sink`]; see [the module's documentation](self) for
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
///             0 => Ok(Delivered { status: Some(200) }),
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
        Instrument::new(self, trace::deliver_span)
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
fn outcome(result: &Result<Delivered, SinkError>) -> &'static str {
    result
        .as_ref()
        .map_or_else(SinkError::kind, |_| "delivered")
}
