//! The connection thread: one SQLite connection, owned by one OS thread,
//! that runs every call as one transaction, so blocking I/O never runs on
//! the async runtime.
//!
//! Calls that queue up while the thread is busy share one commit (group
//! commit): each runs in its own savepoint, so it is still all or nothing,
//! and none is answered before the commit that makes it durable. Pages that
//! several calls change (a job's row, index leaves, the free list) are then
//! written to the log once rather than once per call.
//!
//! Opening takes an exclusive lock on `<db>.lock` (`flock`) for as long as
//! the backend lives: a second process (or a second open in this one) is
//! refused with a clear error instead of sharing leases it cannot see.

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use fs4::fs_std::FileExt;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;
use wds_core::{Error, Result};

use crate::schema;

/// Most calls one commit carries.
const MAX_GROUP: usize = 32;

/// Work for the connection thread.
enum Task {
    /// Runs on the connection outside any transaction.
    Plain(Box<dyn FnOnce(&mut Db) + Send>),
    /// One trait call: a transaction of its own, or a savepoint in a
    /// group's.
    Call(Box<dyn Call>),
}

/// A call waiting for the connection thread: run once, answered once its
/// transaction committed or was undone.
trait Call: Send {
    fn mode(&self) -> Mode;
    /// Runs the call's body; whether it succeeded (a failed one has
    /// written nothing once rolled back to its savepoint).
    fn run(&mut self, tx: &Tx<'_>, path: &Path) -> bool;
    /// Sends the result, or `undone` when the transaction did not commit.
    fn answer(self: Box<Self>, undone: Option<&Undone>, path: &Path);
}

/// A call's body, its result once run, and where its answer goes.
struct Pending<T, F> {
    op: &'static str,
    mode: Mode,
    body: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Call for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Tx<'_>, &Path) -> Result<T> + Send + 'static,
{
    fn mode(&self) -> Mode {
        self.mode
    }

    fn run(&mut self, tx: &Tx<'_>, path: &Path) -> bool {
        let Some(body) = self.body.take() else {
            return false;
        };
        let result = body(tx, path);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, undone: Option<&Undone>, path: &Path) {
        let out = match (self.result, undone) {
            // A call's own failure stands: it wrote nothing either way.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(undone)) => Err(undone.error(self.op, path)),
            (None, None) => Err(Error::unavailable(
                self.op,
                "the call failed on the sqlite connection thread (it panicked)",
            )),
        };
        let _ = self.reply.send(out);
    }
}

/// Why a transaction did not commit, for each call it carried.
pub(crate) struct Undone {
    code: Option<ErrorCode>,
    text: String,
}

impl Undone {
    fn of(e: &rusqlite::Error) -> Undone {
        Undone {
            code: e.sqlite_error_code(),
            text: e.to_string(),
        }
    }

    /// The error a call named `op` gets: [`Error::Corrupt`] for damage,
    /// [`Error::Unavailable`] (retryable) otherwise.
    fn error(&self, op: &'static str, path: &Path) -> Error {
        match self.code {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Error::Corrupt {
                key: path.display().to_string(),
                detail: format!(
                    "{} (during {op}; see docs/operations.md to restore a backup)",
                    self.text
                ),
            },
            _ => Error::unavailable(op, format!("sqlite {}: {}", path.display(), self.text)),
        }
    }
}

/// The queue's counts and the id counter. The lock makes this process the
/// only writer, so they live here, loaded from the tables at open and
/// changed with each committed call, rather than in a row that every call
/// would rewrite.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    /// The last number given to a batch, a lease or a ready position.
    pub(crate) next: i64,
    /// Messages in ready batches.
    pub(crate) ready: i64,
    /// Messages in leased batches.
    pub(crate) leased: i64,
    /// Scheduled retries.
    pub(crate) scheduled: i64,
    /// Dead letters.
    pub(crate) dead: i64,
}

/// One transaction: the connection, and the counters as the call changes
/// them (kept only if it commits).
pub(crate) struct Tx<'a> {
    conn: &'a Connection,
    pub(crate) counters: Cell<Counters>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// What the connection thread owns.
pub(crate) struct Db {
    conn: Connection,
    counters: Counters,
    path: PathBuf,
    /// Held (locked) until the thread ends.
    _lock: File,
}

/// Whether a transaction writes (`BEGIN IMMEDIATE`, so it never has to
/// upgrade a read lock) or only reads.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    Read,
    Write,
}

/// How the connection is set up.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) path: PathBuf,
    pub(crate) synchronous_full: bool,
    pub(crate) max_size: Option<u64>,
    pub(crate) busy_timeout: Duration,
    pub(crate) check: bool,
}

/// The handle the backend's clones share: a channel to the thread.
pub(crate) struct Conn {
    sender: Option<mpsc::Sender<Task>>,
    thread: Option<JoinHandle<()>>,
    /// The checkpointer: its channel (closed to stop it) and thread.
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    path: PathBuf,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("path", &self.path).finish()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has run what it was
        // sent; joining releases the file lock before the drop returns, so
        // the same file can be opened again right after.
        if let Some((stop, thread)) = self.checkpointer.take() {
            drop(stop);
            let _ = thread.join();
        }
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the checkpointer copies the log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Starts the checkpointer: a second connection, on a thread of its own,
/// that copies the write-ahead log into the database file every
/// [`CHECKPOINT_EVERY`] (`PRAGMA wal_checkpoint(PASSIVE)`, which never
/// blocks the writer). Checkpoints (page copies and two `fsync`s) then no
/// longer stall the connection thread, and with it every call; the
/// connection's own automatic checkpoint stays as a backstop. `None` (with
/// a warning) when it cannot start: the backstop alone then keeps the log
/// bounded.
fn start_checkpointer(path: &Path) -> Option<(mpsc::Sender<()>, JoinHandle<()>)> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(path, flags) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(db = %path.display(), error = %e, "no background checkpoints");
            return None;
        }
    };
    let (stop, stopped) = mpsc::channel::<()>();
    let db = path.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("wds-sqlite-ckpt".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                let done =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
                if let Err(e) = done {
                    tracing::debug!(db = %db.display(), error = %e, "background checkpoint failed");
                }
            }
        });
    match thread {
        Ok(thread) => Some((stop, thread)),
        Err(e) => {
            tracing::warn!(db = %path.display(), error = %e, "no background checkpoints");
            None
        }
    }
}

/// A SQLite failure as a WDS error: damage is [`Error::Corrupt`] (not
/// retryable); everything else (a full disk, a busy or unwritable file, an
/// I/O error) is [`Error::Unavailable`], which the engine retries.
pub(crate) fn db_error(op: &'static str, path: &Path, e: rusqlite::Error) -> Error {
    Undone::of(&e).error(op, path)
}

impl Db {
    /// Runs a cached statement without parameters or rows (`BEGIN`,
    /// `COMMIT`, savepoints: parsing them each time showed in profiles).
    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
    }

    /// Runs what the thread was sent, in order: each run of calls as one
    /// transaction (see [`Db::commit_group`]), the other tasks between them.
    fn run_tasks(&mut self, tasks: Vec<Task>) {
        let mut group: Vec<Box<dyn Call>> = Vec::new();
        for task in tasks {
            match task {
                Task::Call(call) => group.push(call),
                Task::Plain(task) => {
                    self.commit_group(std::mem::take(&mut group));
                    let run = std::panic::AssertUnwindSafe(|| task(self));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!(path = %self.path.display(), "a sqlite task panicked");
                    }
                }
            }
        }
        self.commit_group(group);
    }

    /// Runs `calls` in one transaction and answers each once it committed
    /// (or did not).
    ///
    /// One call runs as before: committed when it succeeds, rolled back
    /// when it fails. Several run each in a savepoint: a failed one is
    /// rolled back to its savepoint (so it writes nothing) and the others
    /// commit. When SQLite itself ends the transaction (a full disk, an I/O
    /// error) or the commit fails, nothing of any of them stays and each
    /// gets that error (retryable unless the file is damaged); the queue
    /// counters follow only what committed.
    fn commit_group(&mut self, mut calls: Vec<Box<dyn Call>>) {
        if calls.is_empty() {
            return;
        }
        let single = calls.len() == 1;
        let begin = if calls.iter().any(|c| matches!(c.mode(), Mode::Write)) {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN DEFERRED"
        };
        if let Err(e) = self.exec(begin) {
            let undone = Undone::of(&e);
            for call in calls {
                call.answer(Some(&undone), &self.path);
            }
            return;
        }
        let tx = Tx {
            conn: &self.conn,
            counters: Cell::new(self.counters),
        };
        let mut undone: Option<Undone> = None;
        let mut failed = false;
        for call in calls.iter_mut() {
            if !single {
                if let Err(e) = self.exec("SAVEPOINT call") {
                    undone = Some(Undone::of(&e));
                    break;
                }
            }
            let before = tx.counters.get();
            let run = std::panic::AssertUnwindSafe(|| call.run(&tx, &self.path));
            let ok = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                tracing::error!(path = %self.path.display(), "a sqlite call panicked");
                false
            });
            if ok {
                if !single {
                    if let Err(e) = self.exec("RELEASE call") {
                        undone = Some(Undone::of(&e));
                        break;
                    }
                }
                continue;
            }
            tx.counters.set(before);
            if self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back.
                undone = Some(Undone {
                    code: None,
                    text: "the transaction was rolled back by a failed call it shared".into(),
                });
                break;
            }
            if single {
                failed = true;
            } else if let Err(e) = self
                .exec("ROLLBACK TO call")
                .and_then(|()| self.exec("RELEASE call"))
            {
                undone = Some(Undone::of(&e));
                break;
            }
        }
        let counters = tx.counters.get();
        if undone.is_none() && !failed {
            match self.exec("COMMIT") {
                Ok(()) => self.counters = counters,
                Err(e) => undone = Some(Undone::of(&e)),
            }
        }
        if (undone.is_some() || failed) && !self.conn.is_autocommit() {
            // Nothing of a failed transaction stays; a failed rollback
            // leaves the connection unusable, so say so loudly.
            if let Err(e) = self.exec("ROLLBACK") {
                tracing::error!(path = %self.path.display(), error = %e, "sqlite rollback failed");
            }
        }
        for call in calls {
            call.answer(undone.as_ref(), &self.path);
        }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for statements that cannot run in a transaction.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs a pragma that answers one integer.
    pub(crate) fn pragma_int(&self, name: &str) -> Result<i64> {
        self.conn
            .pragma_query_value(None, name, |row| row.get(0))
            .map_err(|e| db_error("pragma", &self.path, e))
    }
}

impl Conn {
    /// Locks, opens, checks and migrates the database on a new thread.
    pub(crate) async fn open(options: Options) -> Result<Conn> {
        let (sender, receiver) = mpsc::channel::<Task>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let path = options.path.clone();
        let thread = std::thread::Builder::new()
            .name("wds-sqlite".into())
            .spawn(move || {
                let mut db = match Db::open(&options) {
                    Ok(db) => {
                        let _ = ready_tx.send(Ok(()));
                        db
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Whatever queued up while the last tasks ran goes
                // together; a panicking task or call must not take the
                // connection (and every later call) with it.
                while let Ok(task) = receiver.recv() {
                    let mut tasks = vec![task];
                    while tasks.len() < MAX_GROUP {
                        match receiver.try_recv() {
                            Ok(task) => tasks.push(task),
                            Err(_) => break,
                        }
                    }
                    db.run_tasks(tasks);
                }
            })
            .map_err(|e| Error::unavailable("open", e))?;
        let opened = ready_rx
            .await
            .unwrap_or_else(|_| Err(Error::unavailable("open", "the sqlite thread stopped")));
        if let Err(e) = opened {
            let _ = thread.join();
            return Err(e);
        }
        let checkpointer = start_checkpointer(&path);
        Ok(Conn {
            sender: Some(sender),
            thread: Some(thread),
            checkpointer,
            path,
        })
    }

    /// Runs `f` on the connection thread and waits for its answer.
    ///
    /// Dropping the returned future does not stop `f`: it runs to the end
    /// (commit or rollback), so each call stays all or nothing.
    pub(crate) async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = Task::Plain(Box::new(move |db| {
            let _ = tx.send(f(db));
        }));
        self.send(op, task, rx).await
    }

    /// Runs `f` in a transaction (`mode`) on the connection thread, maybe
    /// sharing its commit with other calls (see the module docs), and
    /// waits for its answer, given once the transaction committed.
    ///
    /// As with [`Conn::call`], dropping the future does not stop `f`.
    pub(crate) async fn transaction<T, F>(&self, op: &'static str, mode: Mode, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>, &Path) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = Task::Call(Box::new(Pending {
            op,
            mode,
            body: Some(f),
            result: None,
            reply: tx,
        }));
        self.send(op, task, rx).await
    }

    async fn send<T>(
        &self,
        op: &'static str,
        task: Task,
        rx: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        let stopped = || Error::unavailable(op, "the sqlite connection thread has stopped");
        self.sender
            .as_ref()
            .ok_or_else(stopped)?
            .send(task)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Db {
    fn open(options: &Options) -> Result<Db> {
        let path = &options.path;
        let lock_path = lock_path(path);
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| {
                Error::io(
                    format!(
                        "database {}: cannot open the lock file {}; the database's folder \
                         must be writable by this process",
                        path.display(),
                        lock_path.display()
                    ),
                    e,
                )
            })?;
        match lock.try_lock_exclusive() {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::config(
                    "path",
                    format!(
                        "database {}: another WDS process is using it (it holds {}); stop that \
                         process or give this one another data dir",
                        path.display(),
                        lock_path.display()
                    ),
                ))
            }
            Err(e) => {
                return Err(Error::io(
                    format!(
                        "database {}: cannot lock {}",
                        path.display(),
                        lock_path.display()
                    ),
                    e,
                ))
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| opening(path, "open", e))?;
        let mut db = Db {
            conn,
            counters: Counters::default(),
            path: path.clone(),
            _lock: lock,
        };
        db.configure(options)?;
        if options.check {
            db.check()?;
        }
        schema::migrate(&mut db.conn).map_err(|e| match e {
            schema::MigrateError::Sqlite(e) => opening(path, "migrate", e),
            schema::MigrateError::Newer(version) => Error::backend(
                "migrate",
                format!(
                    "database {}: its schema version {version} is newer than this WDS knows \
                     ({}); run a newer WDS",
                    path.display(),
                    schema::VERSION
                ),
            ),
        })?;
        db.reclaim_leases()?;
        db.counters = db.count().map_err(|e| opening(path, "count", e))?;
        Ok(db)
    }

    /// The counters, from the tables.
    fn count(&self) -> rusqlite::Result<Counters> {
        let one = |sql: &str| self.conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(Counters {
            next: one(
                "SELECT max(coalesce(max(id), 0), coalesce(max(lease), 0), coalesce(max(pos), 0)) \
                 FROM batches",
            )?,
            ready: one("SELECT coalesce(sum(n), 0) FROM batches WHERE pos IS NOT NULL")?,
            leased: one("SELECT coalesce(sum(n), 0) FROM batches WHERE pos IS NULL")?,
            scheduled: one("SELECT count(*) FROM scheduled")?,
            dead: one("SELECT count(*) FROM dead")?,
        })
    }

    /// Expires every lease left in the file. The lock says no other
    /// process is running, so their holders are gone: a restarted process
    /// gets their batches at its first lease (those marked as sending come
    /// back in doubt), without waiting for the deadlines.
    fn reclaim_leases(&mut self) -> Result<()> {
        let path = self.path.clone();
        let left = self
            .conn
            .execute(
                "UPDATE batches SET deadline = 0 WHERE deadline IS NOT NULL",
                [],
            )
            .map_err(|e| opening(&path, "reclaim leases", e))?;
        if left > 0 {
            tracing::info!(db = %path.display(), batches = left, "leases of a previous process reclaimed");
        }
        Ok(())
    }

    fn configure(&mut self, options: &Options) -> Result<()> {
        let path = self.path.clone();
        let err = |e| opening(&path, "configure", e);
        self.conn.busy_timeout(options.busy_timeout).map_err(err)?;
        self.conn.set_prepared_statement_cache_capacity(64);
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::backend(
                "configure",
                format!(
                    "database {}: cannot switch it to WAL mode (journal_mode is {mode})",
                    path.display()
                ),
            ));
        }
        let sync = if options.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        self.conn
            .pragma_update(None, "synchronous", sync)
            .map_err(err)?;
        self.conn
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(err)?;
        // The checkpointer thread copies the WAL into the file every
        // second; this connection checkpoints itself only past 10,000
        // pages (40 MB) not yet copied, as a backstop (a checkpoint copies
        // each page once however often it was rewritten: job rows, index
        // roots).
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 10_000)
            .map_err(err)?;
        // 16 MB of page cache.
        self.conn
            .pragma_update(None, "cache_size", -16_000)
            .map_err(err)?;
        if let Some(bytes) = options.max_size {
            let page: i64 = self.pragma_int("page_size")?;
            let pages = (bytes / page.max(512) as u64).max(1);
            self.conn
                .pragma_update(None, "max_page_count", pages as i64)
                .map_err(err)?;
        }
        Ok(())
    }

    /// `PRAGMA quick_check`: a damaged file is refused at start, not found
    /// half-way through a job.
    fn check(&mut self) -> Result<()> {
        let path = self.path.clone();
        let mut stmt = self
            .conn
            .prepare("PRAGMA quick_check")
            .map_err(|e| opening(&path, "check", e))?;
        let problems: Vec<String> = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| opening(&path, "check", e))?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(Error::Corrupt {
            key: path.display().to_string(),
            detail: format!(
                "the database is damaged ({}); restore a backup (see docs/operations.md)",
                problems.join("; ")
            ),
        })
    }
}

/// An error while opening, with what to do about it.
fn opening(path: &Path, op: &'static str, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::Corrupt {
            key: path.display().to_string(),
            detail: format!("{e}: the file is not a WDS database or is damaged; restore a backup or move it away (see docs/operations.md)"),
        },
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            Error::Backend {
                op,
                reason: format!(
                    "database {}: {e}: the file and its folder must be writable by this process",
                    path.display()
                ),
                source: Some(e.into()),
            }
        }
        Some(ErrorCode::DiskFull) => Error::Backend {
            op,
            reason: format!(
                "database {}: {e}: free some space on its disk",
                path.display()
            ),
            source: Some(e.into()),
        },
        _ => Error::Backend {
            op,
            reason: format!("database {}: {e}", path.display()),
            source: Some(e.into()),
        },
    }
}

/// The lock file of a database: `<db>.lock` beside it.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}
