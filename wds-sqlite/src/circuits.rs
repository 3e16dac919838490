//! The circuits of endpoints in the `circuits` table: one row per endpoint
//! that was ever opened, changed in one write transaction. They survive a
//! restart, so a process that comes back to an endpoint still down keeps
//! holding its messages.

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use wds_core::backend::{CircuitState, CircuitStore};
use wds_core::{Error, Result};

use crate::backend::SqliteBackend;
use crate::conn::{db_error, Tx};

/// The stored state of `endpoint` (`Closed` without a row).
fn stored(tx: &Tx<'_>, path: &std::path::Path, endpoint: &str) -> Result<CircuitState> {
    let op = "circuit load";
    let text: Option<String> = tx
        .prepare_cached("SELECT state FROM circuits WHERE endpoint = ?1")
        .and_then(|mut s| s.query_row([endpoint], |r| r.get(0)).optional())
        .map_err(|e| db_error(op, path, e))?;
    match text {
        None => Ok(CircuitState::Closed),
        Some(text) => text.parse().map_err(|detail| Error::Corrupt {
            key: format!("{} circuits {endpoint:?}", path.display()),
            detail,
        }),
    }
}

#[async_trait]
impl CircuitStore for SqliteBackend {
    async fn load(&self, endpoint: &str) -> Result<CircuitState> {
        let endpoint = endpoint.to_owned();
        self.read("circuit load", move |tx, path| stored(tx, path, &endpoint))
            .await
    }

    async fn swap(&self, endpoint: &str, from: &CircuitState, to: &CircuitState) -> Result<bool> {
        let (endpoint, from, to) = (endpoint.to_owned(), *from, *to);
        self.write("circuit swap", move |tx, path| {
            if stored(tx, path, &endpoint)? != from {
                return Ok(false);
            }
            let op = "circuit swap";
            let changed = match to {
                CircuitState::Closed => tx
                    .prepare_cached("DELETE FROM circuits WHERE endpoint = ?1")
                    .and_then(|mut s| s.execute([&endpoint])),
                open => tx
                    .prepare_cached(
                        "INSERT INTO circuits (endpoint, state) VALUES (?1, ?2) \
                         ON CONFLICT (endpoint) DO UPDATE SET state = excluded.state",
                    )
                    .and_then(|mut s| s.execute([&endpoint, &open.to_string()])),
            };
            changed.map_err(|e| db_error(op, path, e))?;
            Ok(true)
        })
        .await
    }
}
