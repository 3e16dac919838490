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

pub(crate) mod ext;
mod inspect;
mod route;
mod trace;

// `SinkExt` and `Layer` are at the crate root, their one path.
#[allow(unused_imports)] // named by this module's documentation
use crate::{Sink, SinkError};
pub use ext::{layer_fn, LayerFn};
#[allow(unused_imports)] // named by this module's documentation
use ext::{Layer, SinkExt};
pub use inspect::Inspect;
pub use route::Router;
pub use trace::Instrument;
