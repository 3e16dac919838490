//! The workers seen, in the `workers` table: one row per worker id with
//! its last beat. The file belongs to one process (`all`), whose worker
//! beats into it and whose control API lists it.

use async_trait::async_trait;
use rusqlite::params;
use wds_core::backend::{WorkerBeat, WorkerRegistry, WorkerSeen};
use wds_core::{backend::now_ms, Error, Result};

use crate::backend::{int, uint, SqliteBackend};
use crate::conn::db_error;

#[async_trait]
impl WorkerRegistry for SqliteBackend {
    async fn beat(&self, beat: &WorkerBeat) -> Result<()> {
        let json = serde_json::to_string(beat).map_err(|e| Error::Corrupt {
            key: format!("worker {:?}", beat.worker),
            detail: format!("cannot encode its beat: {e}"),
        })?;
        let worker = beat.worker.clone();
        let retention = self.worker_retention_ms();
        self.write("worker beat", move |tx, path| {
            let now = now_ms();
            let op = "worker beat";
            tx.prepare_cached("DELETE FROM workers WHERE seen_ms < ?1")
                .and_then(|mut s| s.execute([int(now.saturating_sub(retention))]))
                .map_err(|e| db_error(op, path, e))?;
            tx.prepare_cached(
                "INSERT INTO workers (worker, beat, seen_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (worker) DO UPDATE SET beat = excluded.beat, seen_ms = excluded.seen_ms",
            )
            .and_then(|mut s| s.execute(params![worker, json, int(now)]))
            .map_err(|e| db_error(op, path, e))?;
            Ok(())
        })
        .await
    }

    async fn workers(&self) -> Result<Vec<WorkerSeen>> {
        let retention = self.worker_retention_ms();
        self.read("workers", move |tx, path| {
            let oldest = now_ms().saturating_sub(retention);
            let rows: Vec<(String, String, i64)> = tx
                .prepare_cached("SELECT worker, beat, seen_ms FROM workers WHERE seen_ms >= ?1")
                .and_then(|mut s| {
                    s.query_map([int(oldest)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect()
                })
                .map_err(|e| db_error("workers", path, e))?;
            rows.into_iter()
                .map(|(worker, json, seen_ms)| {
                    let beat = serde_json::from_str(&json).map_err(|e| Error::Corrupt {
                        key: format!("{} workers {worker:?}", path.display()),
                        detail: e.to_string(),
                    })?;
                    Ok(WorkerSeen::new(beat, uint(seen_ms)))
                })
                .collect()
        })
        .await
    }
}
