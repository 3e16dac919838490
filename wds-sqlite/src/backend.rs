//! [`SqliteBackend`] and its builder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wds_core::{Error, Result};

use crate::conn::{db_error, Conn, Mode, Options, Tx};

/// Messages per batch when due retries and replayed dead letters are
/// gathered into new batches.
pub(crate) const REBATCH_SIZE: usize = 100;
/// Most due retries one `lease` call moves to ready, to keep each
/// transaction short.
pub(crate) const MAX_DUE_PER_LEASE: usize = 1_000;

/// A durable [`wds_core::backend::Queue`] and [`wds_core::backend::OffsetStore`] in one
/// SQLite file, for the processes of one machine that share one backend
/// handle (the `all` and `demo` roles).
///
/// Every trait call is one transaction on a dedicated connection thread
/// (see the crate docs). Clones share the connection; give one clone to
/// each component, as with `wds_memory::MemoryBackend`.
///
/// ```no_run
/// # async fn demo(sink: impl wds_core::Sink) -> wds_core::Result<()> {
/// use wds_sqlite::SqliteBackend;
///
/// let backend = SqliteBackend::open("wds-data/wds.db").await?;
/// let engine = wds_core::Engine::builder().backend(backend).sink(sink).build()?;
/// # let _ = engine; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteBackend {
    pub(crate) conn: Arc<Conn>,
    /// Rejects, and dead letters, of a job kept in detail.
    pub(crate) detail_limit: u64,
    /// How long a silent worker is kept (see [`WorkerRegistry`](wds_core::backend::WorkerRegistry)).
    pub(crate) worker_retention: Duration,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` with the default
    /// settings: see [`SqliteBackend::builder`].
    ///
    /// # Errors
    ///
    /// As [`SqliteBackendBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteBackend> {
        Self::builder(path).open().await
    }

    /// Starts configuring a backend on the database file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteBackendBuilder {
        SqliteBackendBuilder {
            options: Options {
                path: path.as_ref().to_path_buf(),
                synchronous_full: false,
                max_size: None,
                busy_timeout: Duration::from_secs(5),
                check: true,
            },
            detail_limit: wds_core::backend::DEFAULT_DETAIL_LIMIT,
            worker_retention: wds_core::backend::WORKER_RETENTION,
        }
    }

    /// How long a worker that stopped beating is kept, in milliseconds.
    pub(crate) fn worker_retention_ms(&self) -> u64 {
        u64::try_from(self.worker_retention.as_millis()).unwrap_or(u64::MAX)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.conn.path()
    }

    /// How much room the database takes on disk.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when SQLite cannot answer.
    pub async fn storage(&self) -> Result<Storage> {
        self.conn
            .call("storage", |db| {
                let page = db.pragma_int("page_size")?.max(0) as u64;
                let pages = db.pragma_int("page_count")?.max(0) as u64;
                let free = db.pragma_int("freelist_count")?.max(0) as u64;
                let wal = wal_path(db.path());
                let wal_bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
                Ok(Storage {
                    file_bytes: page * pages,
                    free_bytes: page * free,
                    wal_bytes,
                })
            })
            .await
    }

    /// Copies the whole database into a new file at `to` while the backend
    /// runs (`VACUUM INTO`): a consistent snapshot, compacted.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the copy fails (for example, `to`
    /// exists already or its disk is full).
    pub async fn backup(&self, to: impl AsRef<Path>) -> Result<()> {
        let to = to.as_ref().to_string_lossy().into_owned();
        self.conn
            .call("backup", move |db| {
                db.conn()
                    .execute("VACUUM INTO ?1", [&to])
                    .map_err(|e| db_error("backup", db.path(), e))?;
                Ok(())
            })
            .await
    }

    /// Runs `f` in one write transaction (`BEGIN IMMEDIATE`) on the
    /// connection thread.
    pub(crate) async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>, &Path) -> Result<T> + Send + 'static,
    {
        self.transaction(op, Mode::Write, f).await
    }

    /// Runs `f` in one read transaction on the connection thread.
    pub(crate) async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>, &Path) -> Result<T> + Send + 'static,
    {
        self.transaction(op, Mode::Read, f).await
    }

    async fn transaction<T, F>(&self, op: &'static str, mode: Mode, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>, &Path) -> Result<T> + Send + 'static,
    {
        self.conn.transaction(op, mode, f).await
    }
}

/// The room a database takes, from [`SqliteBackend::storage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storage {
    /// The main file's size.
    pub file_bytes: u64,
    /// Of that, pages free for reuse (left by settled batches).
    pub free_bytes: u64,
    /// The write-ahead log's size (folded into the main file at checkpoints).
    pub wal_bytes: u64,
}

/// The write-ahead log of a database: `<db>-wal`.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Configures and opens a [`SqliteBackend`]; made by [`SqliteBackend::builder`].
#[derive(Clone, Debug)]
pub struct SqliteBackendBuilder {
    options: Options,
    detail_limit: usize,
    worker_retention: Duration,
}

impl SqliteBackendBuilder {
    /// `synchronous=FULL` instead of `NORMAL`: every commit is on disk
    /// before the call returns, so a power loss loses nothing acknowledged,
    /// at the price of an `fsync` per call. With `NORMAL` (the default) a
    /// process crash or `kill -9` loses nothing either; a power loss or an
    /// OS crash may lose the last commits (never corrupting the file).
    pub fn synchronous_full(mut self, full: bool) -> Self {
        self.options.synchronous_full = full;
        self
    }

    /// The most the database file may grow to, in bytes (`max_page_count`).
    /// Past it every write fails as on a full disk ([`Error::Unavailable`],
    /// which the engine retries) and nothing already stored is lost.
    pub fn max_size(mut self, bytes: Option<u64>) -> Self {
        self.options.max_size = bytes;
        self
    }

    /// How long a call waits for a lock that another connection holds (a
    /// `sqlite3` shell reading the file, a backup) before failing.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.options.busy_timeout = timeout;
        self
    }

    /// How many rejects, and how many dead letters, of each job are kept in
    /// detail (default [`wds_core::backend::DEFAULT_DETAIL_LIMIT`]). A job keeps its
    /// first `limit` rejects in full, and a new dead letter keeps its
    /// reason's detail while the job has fewer than `limit` dead letters;
    /// the rest keep their kind (and a dead letter its whole message, so
    /// it replays), and every count stays exact: see [Bounded
    /// detail](wds_core::backend::OffsetStore#bounded-detail). A database opened
    /// with another limit than before applies it from then on.
    pub fn detail_limit(mut self, limit: usize) -> Self {
        self.detail_limit = limit;
        self
    }

    /// How long a worker that stopped beating stays listed by
    /// [`wds_core::backend::WorkerRegistry::workers`] (default
    /// [`wds_core::backend::WORKER_RETENTION`]).
    pub fn worker_retention(mut self, retention: Duration) -> Self {
        self.worker_retention = retention;
        self
    }

    /// Whether to run `PRAGMA quick_check` at open (the default), so that a
    /// damaged file is refused at start. It reads the whole file once.
    pub fn check_at_open(mut self, check: bool) -> Self {
        self.options.check = check;
        self
    }

    /// Locks the database (`<path>.lock`), opens it (creating it if
    /// needed), checks it, and migrates its schema to this version.
    ///
    /// # Errors
    ///
    /// - [`Error::Config`] (setting `path`) when the database's folder does
    ///   not exist, or another process (or another backend in this one) has
    ///   the database open;
    /// - [`Error::Io`] when the lock file beside it cannot be opened or locked;
    /// - [`Error::Backend`] when the file or its folder cannot be written,
    ///   when the disk is full, or when the schema is newer than this code;
    /// - [`Error::Corrupt`] when the file is not a database or is damaged.
    pub async fn open(self) -> Result<SqliteBackend> {
        let path = &self.options.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(Error::config(
                    "path",
                    format!(
                        "database {}: its folder {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
        }
        let conn = Conn::open(self.options).await?;
        Ok(SqliteBackend {
            conn: Arc::new(conn),
            detail_limit: self.detail_limit as u64,
            worker_retention: self.worker_retention,
        })
    }
}

/// `u64` as SQLite's `INTEGER` (our counters and times stay far below 2^63).
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// SQLite's `INTEGER` back as `u64` (negative values, which we never
/// store, read as 0).
pub(crate) fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
