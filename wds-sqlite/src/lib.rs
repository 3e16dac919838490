//! # wds-sqlite
//!
//! The durable embedded backend of WDS: a [`Queue`](wds_core::Queue) and
//! [`OffsetStore`](wds_core::OffsetStore) in one SQLite file
//! ([`SqliteBackend`]), for everything one process runs (the `all` and
//! `demo` roles of `full_system`). Jobs, queued batches, leases, retries,
//! dead letters and per-line outcomes survive Ctrl-C, `kill -9` and
//! restarts; nothing needs installing (SQLite is compiled in).
//!
//! ```no_run
//! # async fn demo(sink: impl wds_core::Sink) -> wds_core::Result<()> {
//! use wds_sqlite::SqliteBackend;
//!
//! let backend = SqliteBackend::open("wds-data/wds.db").await?;
//! let engine = wds_core::Engine::builder().backend(backend).sink(sink).build()?;
//! # let _ = engine; Ok(()) }
//! ```
//!
//! # Transactions
//!
//! Every trait call is one SQLite transaction, run on a dedicated
//! connection thread so the async runtime never blocks on disk: a push
//! appends its batch, records its rejects and moves the checkpoint
//! together; a lease reclaims expired leases (by deadline), promotes due
//! retries and leases ready batches together; a settle records every
//! outcome and count of its batch together; `push_all` and
//! `settle_and_continue` do all their parts in one transaction too. A
//! call whose future is dropped still runs to its commit or rollback.
//!
//! # Durability
//!
//! The database is in WAL mode with `synchronous=NORMAL`: a committed call
//! survives the process crashing or being killed; a power loss or an OS
//! crash may lose the last commits, but never corrupts the file. A lost
//! `mark_sending` makes its batch look unsent, so after a power loss the
//! batches that were on the wire may be sent again. Ask for
//! [`synchronous_full`](SqliteBackendBuilder::synchronous_full) to lose
//! nothing acknowledged even then, at one `fsync` per call.
//!
//! # One process
//!
//! Opening takes an exclusive lock on `<db>.lock` for the backend's life.
//! A second process (or a second backend in this one) on the same file is
//! refused at open with [`Error::Config`](wds_core::Error::Config); readers
//! such as the `sqlite3` shell are not affected. To spread work over many
//! processes or machines, use `wds-redis`.
//!
//! # Data
//!
//! Schema migrations run at open (`PRAGMA user_version`); a file written by
//! a newer version is refused. Per-line outcomes are packed, one row per
//! settle and chunk of 1,024 lines, about 7 bytes per delivered line. A
//! job keeps its first [`detail_limit`](SqliteBackendBuilder::detail_limit)
//! rejects and dead letters in detail; past that a rejected line is a run
//! of its kind (a file of invalid lines costs well under a byte a line) and
//! a dead letter keeps its message and kind, with every count exact.
//! Queued batches are deleted once settled (their pages are reused), so the
//! file grows with the largest queue it held plus the outcomes of every job.

mod backend;
mod circuits;
mod codec;
mod conn;
mod control;
mod offsets;
mod queue;
mod schema;
mod turns;

pub use backend::{SqliteBackend, SqliteBackendBuilder, Storage};
pub use rusqlite;
pub use wds_core;
