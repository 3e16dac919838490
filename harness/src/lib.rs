//! The one home of the WDS test and benchmark harness, shared by the
//! end-to-end tests (`tests/`, package `wds-tests`) and the end-to-end
//! benchmark (`bench/`, package `wds-bench`). Not published.
//!
//! - [`process`]: the `full_system` binary as child processes: start,
//!   signal, kill, read their logs, peak memory.
//! - [`ports`]: listen addresses for servers: port 0, or a reserved port
//!   that survives a restart.
//! - [`http`]: a raw HTTP/1.1 client over a socket, for requests a
//!   well-behaved client would not send and for tests that want no client
//!   library between them and the server.
//! - [`receiver`]: webhook receivers in the test process: a scriptable one
//!   that records every request, and the product's receiver wrapped to
//!   answer late and note arrival times.
//! - [`checks`]: a recording pass-through in front of a receiver, and
//!   counts over what it saw.
//! - [`cluster`]: a deployment of real processes over a private Redis.
//! - [`redis`]: a private `redis-server`, and what it reports.
//! - [`ScriptedSink`], [`Freezable`], [`account`]: for tests that run the
//!   engine in the test process.

pub mod checks;
pub mod cluster;
pub mod http;
pub mod ports;
pub mod process;
pub mod receiver;
pub mod redis;

mod accounting;
mod freezable;
mod sink;

pub use accounting::{account, users_csv, Accounting};
pub use freezable::Freezable;
pub use sink::{Call, Script, ScriptedSink, Step};

/// A failure of a harness step that a benchmark reports rather than panics on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
