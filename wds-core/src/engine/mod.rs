//! The engine's two roles, for running them apart: a [`Batcher`] that
//! reads inputs into the queue (the initiator's half) and a [`Deliverer`]
//! that leases batches and calls the sink (the worker's half). Both come
//! from an [`Engine`](crate::Engine), which also runs them together.

mod backoff;
mod batcher;
pub(crate) mod builder;
mod concurrency;
pub(crate) mod config;
mod deliverer;
mod seen;
mod threads;
mod window;

pub use batcher::Batcher;
pub use deliverer::Deliverer;
pub use threads::{DeliveryThreads, CALLS_PER_THREAD};
