//! The SQLite backend of `all` and `demo`: durable, one process at a time.

use std::sync::Arc;

use wds_sqlite::SqliteBackend;

use crate::roles::{Backend, Fallible};
use crate::settings::Settings;

/// Opens DATA_DIR/wds.db (or --db), creating its folder: a second process
/// on the same file, an unwritable or damaged file each fail here with one
/// clear line.
pub(crate) async fn open(settings: &Settings) -> Fallible<Backend> {
    let path = settings.db();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the folder {} of the database: {e}",
                dir.display()
            )
        })?;
    }
    let backend = SqliteBackend::builder(&path)
        .synchronous_full(settings.db_sync_full)
        .detail_limit(settings.detail_limit)
        .open()
        .await
        .map_err(|e| format!("sqlite backend: {e}"))?;
    tracing::info!(db = %path.display(), sync_full = settings.db_sync_full, "sqlite backend open");
    Ok(Backend {
        store: Arc::new(backend.clone()),
        queue: Arc::new(backend.clone()),
        offsets: Arc::new(backend.clone()),
        control: Arc::new(backend.clone()),
        circuits: Arc::new(backend.clone()),
        workers: Arc::new(backend),
        limiter: None,
        name: "sqlite",
    })
}
