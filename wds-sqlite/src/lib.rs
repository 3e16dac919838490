#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod circuits;
mod codec;
mod conn;
mod control;
mod offsets;
mod queue;
mod schema;
mod turns;
mod workers;

pub use backend::{SqliteBackend, SqliteBackendBuilder, Storage};
pub use rusqlite;
pub use wds_core;
