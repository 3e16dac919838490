//! Endpoint health: a circuit breaker per endpoint, shared by every worker
//! through the backend.
//!
//! When calls to an endpoint keep failing (connection errors, timeouts,
//! 5xx) the circuit *opens*: no worker sends to it any more, and messages
//! wait in the queue keeping their attempts (the outage is the endpoint's,
//! not the message's). While it is open one worker at a time sends a single
//! message, a *probe*, at growing intervals; the first probe that gets an
//! answer closes the circuit and delivery resumes.
//!
//! - [`CircuitState`](crate::backend::CircuitState): what is stored per endpoint, and its transitions
//!   (pure code over times);
//! - [`CircuitStore`](crate::backend::CircuitStore): where it is stored, shared by the workers (memory in
//!   one process, a SQLite table, a Redis key), with one compare-and-swap;
//! - [`CircuitBreaker`]: what the deliverer asks before sending and tells
//!   after each call; it decides locally when failures are sustained
//!   ([`CircuitSettings`]) and shares the decision through the store.
//!
//! The store and its state are the backend's side of it, in
//! [`crate::backend`]; this module holds what an embedder configures.

mod breaker;
mod failures;
mod settings;
pub(crate) mod state;
pub(crate) mod store;

pub use breaker::CircuitBreaker;
pub use settings::CircuitSettings;

pub(crate) use breaker::{Admission, CallOutcome};
