//! The [`CircuitStore`] trait: where the circuits of endpoints are shared.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use super::state::CircuitState;
use crate::error::Result;

/// Keeps one [`CircuitState`] per endpoint, shared by every worker that
/// delivers to it (memory in one process, a table in SQLite, a key in Redis).
///
/// The store only keeps states: when to open, probe and close is decided by
/// the [`super::CircuitBreaker`] of each worker, which changes a state with
/// [`swap`](CircuitStore::swap) so that of two workers acting on the same
/// state only one wins (one opens the circuit, one claims the probe).
///
/// # Contract
///
/// - `load(endpoint)` MUST return the state last stored for `endpoint` by a
///   successful `swap`, or [`CircuitState::Closed`] if there is none.
/// - `swap(endpoint, from, to)` MUST store `to` and return `true` if
///   and only if the stored state equals `from` (an endpoint never
///   stored counts as `Closed`), atomically with respect to every other
///   `swap` and `load` of the same endpoint, from any process sharing the
///   store. Otherwise it MUST change nothing and return `false`.
/// - Endpoints MUST be independent: any string is a valid endpoint name.
/// - A state MAY be kept as its text ([`CircuitState`]'s `Display` and
///   `FromStr`); equality of the texts is equality of the states.
///
/// # Errors
///
/// [`crate::Error::Unavailable`] when the backend cannot be reached (the
/// breaker then goes on with what it knows: a store outage never stops
/// delivery by itself).
///
/// # Cancel safety
///
/// A dropped `swap` may or may not have happened, as with any backend call.
#[async_trait]
pub trait CircuitStore: Send + Sync + Debug + 'static {
    /// The circuit of `endpoint`.
    async fn load(&self, endpoint: &str) -> Result<CircuitState>;
    /// Replaces `from` by `to`; `false` when the state was not `from`.
    async fn swap(&self, endpoint: &str, from: &CircuitState, to: &CircuitState) -> Result<bool>;
}

#[async_trait]
impl<T: CircuitStore + ?Sized> CircuitStore for Arc<T> {
    async fn load(&self, endpoint: &str) -> Result<CircuitState> {
        (**self).load(endpoint).await
    }
    async fn swap(&self, endpoint: &str, from: &CircuitState, to: &CircuitState) -> Result<bool> {
        (**self).swap(endpoint, from, to).await
    }
}

#[allow(dead_code)]
fn _object_safe(_: Arc<dyn CircuitStore>) {}
