//! A [`Source`] that watches a directory and yields each file once it is
//! completely written.
//!
//! See [`FolderSource`] for the rules.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt::{self, Debug};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, Mutex};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Input, InputData, Source};
use crate::error::{Error, Result};
use crate::model::JobReport;

/// The default settle time.
const DEFAULT_SETTLE: Duration = Duration::from_millis(500);
/// The default rescan period.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Watcher events that may wait for the scan task; more are dropped, which
/// is harmless because the periodic rescan finds what they announced.
const EVENT_BUFFER: usize = 4096;
/// A sidecar is a short message; anything larger is a mistake, not a message.
const MAX_SIDECAR_BYTES: u64 = 64 * 1024;
/// The suffix of a sidecar file.
const SIDECAR_SUFFIX: &str = ".message";

/// Builds a [`FolderSource`].
///
/// Building needs no tokio runtime: the watcher and the background scan task
/// start on the first call to [`Source::next`].
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use wds_core::{FolderSource, Source};
///
/// # async fn run() -> wds_core::Result<()> {
/// let source = FolderSource::builder("/var/spool/wds/in")
///     .settle(Duration::from_millis(500))
///     .default_message(Some("Scheduled maintenance tonight".into()))
///     .archive(Some("/var/spool/wds/done".into()))
///     .build()?;
/// while let Some(input) = source.next().await? {
///     println!("{} is ready: {}", input.name, input.identity);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct FolderSourceBuilder {
    dir: PathBuf,
    settle: Duration,
    default_message: Option<String>,
    archive: Option<PathBuf>,
    poll_interval: Duration,
    watch: bool,
}

impl FolderSourceBuilder {
    /// How long a file's size and modification time must stay unchanged
    /// before it is handed over without a close-after-write (default 500 ms).
    /// Must not be zero. A writer that pauses longer than this while keeping
    /// the file open should write to a `.part` file and rename it instead.
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The message for files that list only user ids (default none). A
    /// file's `.message` sidecar overrides it.
    pub fn default_message(mut self, message: Option<String>) -> Self {
        self.default_message = message;
        self
    }

    /// Where [`Source::finished`] moves a completely read file and its
    /// sidecar (default none: files stay where they are). Created if missing;
    /// it must be on the same file system as the watched folder, because
    /// files are moved by renaming.
    pub fn archive(mut self, archive: Option<PathBuf>) -> Self {
        self.archive = archive;
        self
    }

    /// How often the folder is rescanned as a fallback for missed watcher
    /// events (default 250 ms). Must not be zero. Each rescan lists the
    /// folder and reads the metadata of every file in it, so a folder that
    /// keeps thousands of files (no archive) may want a longer interval.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Polls only, without a watcher: tests the fallback path.
    #[cfg(test)]
    fn without_watcher(mut self) -> Self {
        self.watch = false;
        self
    }

    /// Checks the settings and builds the source.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the folder does not exist, is not a directory or
    /// cannot be listed, when the archive folder cannot be created or is the
    /// watched folder itself, or when the settle time or poll interval is zero.
    pub fn build(self) -> Result<FolderSource> {
        let shown = self.dir.display().to_string();
        let meta = std::fs::metadata(&self.dir).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::Config(format!("folder source: {shown} does not exist"))
            } else {
                Error::Config(format!("folder source: cannot access {shown}: {e}"))
            }
        })?;
        if !meta.is_dir() {
            return Err(Error::Config(format!(
                "folder source: {shown} is not a directory"
            )));
        }
        std::fs::read_dir(&self.dir)
            .map_err(|e| Error::Config(format!("folder source: cannot list {shown}: {e}")))?;
        // Canonical paths make the inputs independent of the working
        // directory and let `finished` recognise our own files.
        let dir = self
            .dir
            .canonicalize()
            .map_err(|e| Error::Config(format!("folder source: cannot resolve {shown}: {e}")))?;
        if self.settle.is_zero() {
            return Err(Error::Config(
                "folder source: the settle time must not be zero".into(),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::Config(
                "folder source: the poll interval must not be zero".into(),
            ));
        }
        let archive = match self.archive {
            None => None,
            Some(archive) => {
                let shown = archive.display().to_string();
                std::fs::create_dir_all(&archive).map_err(|e| {
                    Error::Config(format!(
                        "folder source: cannot create archive folder {shown}: {e}"
                    ))
                })?;
                let archive = archive.canonicalize().map_err(|e| {
                    Error::Config(format!(
                        "folder source: cannot resolve archive folder {shown}: {e}"
                    ))
                })?;
                if archive == dir {
                    return Err(Error::Config(format!(
                        "folder source: the archive folder {shown} is the watched folder"
                    )));
                }
                Some(archive)
            }
        };
        Ok(FolderSource {
            config: Arc::new(Config {
                dir,
                settle: self.settle,
                poll_interval: self.poll_interval,
                default_message: self.default_message,
                watch: self.watch,
            }),
            archive,
            yielded: Arc::default(),
            rx: Mutex::new(None),
            shutdown: CancellationToken::new(),
        })
    }
}

/// A [`Source`] that watches a directory and yields each file in it once it
/// is completely written.
///
/// # When a file is ready
///
/// A file is handed over only when nothing is writing it any more:
///
/// - its writer closed it after writing (inotify's close-after-write, seen
///   through `notify`) and its size and modification time have not changed
///   since; or
/// - it was renamed into place from an ignored name in the same folder
///   (`x.part`, `x.tmp` or `.x` to `x`: the protocol below for "written
///   completely"), as seen by the watcher, and has not changed since; or
/// - its size and modification time (and inode, on Unix) have not changed for
///   the *settle* time.
///
/// A file moved in from another folder, or found by a rescan, waits for the
/// settle time unless a close-after-write is seen for it afterwards. A file
/// that keeps growing is never handed over, and a file that changes while it is being
/// hashed is not handed over either: it waits again. A writer that closes a
/// file and opens it again to append more must write to a `.part` file and
/// rename it when done, or each close may hand over a partial file. An
/// empty file always
/// waits for the settle time, because a writer may create a file, close it
/// and only then open it again to fill it.
///
/// # What is ignored
///
/// Directories, dotfiles (`.name`), `*.tmp`, `*.part` and `*.message`
/// sidecars (suffixes compared case-insensitively). A writer should write to
/// `name.part` (or `name.tmp`) and rename it into place when done; the renamed
/// file is then considered like any new file.
///
/// # Per-file message: the `.message` sidecar
///
/// For a data file `X`, a file `X.message` next to it at the moment `X` is
/// handed over gives that job's default message: its UTF-8 content, trimmed.
/// It overrides the builder's [`default_message`](FolderSourceBuilder::default_message);
/// an empty sidecar means "no default message". Write the sidecar *before*
/// renaming `X` into place (the HTTP upload does). A sidecar that cannot be
/// read, or is not UTF-8, holds the file back (with a warning) rather than
/// sending it with the wrong message.
///
/// # Watching and polling
///
/// The folder is watched (non-recursively) with `notify`'s recommended
/// watcher *and* rescanned every poll interval, because watchers can miss
/// events (network file systems, a queue overflow). If no watcher can be
/// created the source logs a warning and works by polling alone.
///
/// # Lifecycle
///
/// Built with [`FolderSource::builder`]. The watcher and a background scan
/// task start on the first call to [`next`](Source::next) (so that call must
/// run inside a tokio runtime); the first scan yields the files already in
/// the folder. Dropping the source, or calling
/// [`shutdown`](FolderSource::shutdown), stops both.
///
/// Each file is yielded once per `FolderSource`, unless it is later replaced
/// by a different one (another size, modification time or inode) under the
/// same name. Inputs carry no format (the engine detects it) and their
/// identity is the hash of the content at the moment they are handed over.
///
/// # Errors
///
/// [`next`](Source::next) returns [`Error::Input`] once when the folder can no
/// longer be listed (deleted, permissions changed); the source keeps polling
/// and resumes when the folder is back. A file that cannot be read is logged
/// and skipped, and tried again at a later rescan.
///
/// # Cancel safety
///
/// [`next`](Source::next) is cancel safe: inputs wait in a channel filled by
/// the scan task, so dropping a `next` future loses none.
pub struct FolderSource {
    config: Arc<Config>,
    archive: Option<PathBuf>,
    /// What was handed over, by path: lets the scan skip it and lets
    /// `finished` check the file was not replaced before archiving it.
    yielded: Arc<StdMutex<HashMap<PathBuf, Stamp>>>,
    /// `None` until the first `next` starts the scan task.
    rx: Mutex<Option<mpsc::Receiver<Result<Input>>>>,
    shutdown: CancellationToken,
}

impl Debug for FolderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FolderSource")
            .field("dir", &self.config.dir)
            .field("settle", &self.config.settle)
            .field("poll_interval", &self.config.poll_interval)
            .field("default_message", &self.config.default_message)
            .field("archive", &self.archive)
            .field("shut_down", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl FolderSource {
    /// A builder for a source watching `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> FolderSourceBuilder {
        FolderSourceBuilder {
            dir: dir.into(),
            settle: DEFAULT_SETTLE,
            default_message: None,
            archive: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            watch: true,
        }
    }

    /// The watched folder (canonical).
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Stops watching. An input already handed to the channel is still
    /// returned by [`next`](Source::next); after that it returns `Ok(None)`.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Starts the watcher and the scan task; called once, from `next`.
    fn start(&self) -> mpsc::Receiver<Result<Input>> {
        // Capacity 1: files are hashed just before they are wanted, so the
        // identity is as fresh as possible.
        let (tx, rx) = mpsc::channel(1);
        let (event_tx, events) = mpsc::channel(EVENT_BUFFER);
        // The watcher must be running before the first scan, so that nothing
        // written in between is missed.
        let watcher = if self.config.watch {
            watch(&self.config.dir, event_tx)
        } else {
            None
        };
        let scanner = Scanner {
            config: Arc::clone(&self.config),
            yielded: Arc::clone(&self.yielded),
            candidates: HashMap::new(),
            failed: HashMap::new(),
            folder_error: None,
            pending_error: None,
            watcher,
        };
        tokio::spawn(scanner.run(events, tx, self.shutdown.clone()));
        rx
    }
}

impl Drop for FolderSource {
    fn drop(&mut self) {
        // The scan task owns the watcher: ending it stops both.
        self.shutdown.cancel();
    }
}

#[async_trait]
impl Source for FolderSource {
    async fn next(&self) -> Result<Option<Input>> {
        // Locking and `recv` are both cancel safe, and `start` does not
        // await, so dropping this future loses nothing.
        let mut rx = self.rx.lock().await;
        if rx.is_none() {
            if self.shutdown.is_cancelled() {
                return Ok(None);
            }
            *rx = Some(self.start());
        }
        let Some(rx) = rx.as_mut() else {
            return Ok(None);
        };
        match rx.recv().await {
            Some(item) => item.map(Some),
            None => {
                if !self.shutdown.is_cancelled() {
                    tracing::error!(dir = %self.config.dir.display(), "folder scan task ended unexpectedly");
                }
                Ok(None)
            }
        }
    }

    /// Moves the file (then its sidecar, if any) into the archive folder, if
    /// one is set and the input is a file this source handed over and that has
    /// not changed since. A name already taken in the archive gets a number
    /// (`x.csv` becomes `x.1.csv`). Otherwise does nothing.
    async fn finished(&self, input: &Input, _report: &JobReport) -> Result<()> {
        let Some(archive) = self.archive.clone() else {
            return Ok(());
        };
        let InputData::File(path) = &input.data else {
            return Ok(());
        };
        if path.parent() != Some(self.config.dir.as_path()) {
            return Ok(());
        }
        let expected = lock(&self.yielded).get(path).copied();
        let Some(expected) = expected else {
            tracing::debug!(path = %path.display(), "not handed over by this source; not archived");
            return Ok(());
        };
        let path = path.clone();
        let name = input.name.clone();
        let moved = tokio::task::spawn_blocking({
            let path = path.clone();
            move || archive_file(&path, &archive, expected)
        })
        .await
        .map_err(|e| Error::Input {
            name: name.clone(),
            source: io::Error::other(e),
        })?
        .map_err(|source| Error::Input { name, source })?;
        if moved {
            lock(&self.yielded).remove(&path);
        }
        Ok(())
    }
}

/// The settings the scan task needs.
#[derive(Debug)]
struct Config {
    dir: PathBuf,
    settle: Duration,
    poll_interval: Duration,
    default_message: Option<String>,
    watch: bool,
}

/// What identifies one version of a file cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: Option<SystemTime>,
    /// Tells a file renamed over another apart from it.
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp {
            len: meta.len(),
            mtime: meta.modified().ok(),
            inode,
        }
    }
}

/// A file seen in the folder and not handed over yet.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    stamp: Stamp,
    /// When a change was last seen (a different stamp, or a write event).
    changed_at: Instant,
    /// The stamp at the last close-after-write, if no write was seen since.
    closed: Option<Stamp>,
}

/// The background task: keeps the candidates and hands ready ones over.
struct Scanner {
    config: Arc<Config>,
    yielded: Arc<StdMutex<HashMap<PathBuf, Stamp>>>,
    candidates: HashMap<PathBuf, Candidate>,
    /// Files that could not be read, with the stamp they had: a repeated
    /// failure of the same version is logged at debug level only.
    failed: HashMap<PathBuf, Stamp>,
    /// The error kind while the folder cannot be listed.
    folder_error: Option<io::ErrorKind>,
    /// A folder error waiting to be returned by `next`.
    pending_error: Option<Error>,
    watcher: Option<RecommendedWatcher>,
}

/// What the events of one batch said about a path.
#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    /// Written, created, renamed into place or had its metadata changed.
    touched: bool,
    /// The last event was a close-after-write.
    closed_last: bool,
}

/// The outcome of preparing a ready file.
#[derive(Debug)]
enum Prepared {
    Ready(Input),
    /// The file is not the version that was ready (or is gone).
    Changed(Option<Stamp>),
    Failed(Error),
}

impl Scanner {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<notify::Result<Event>>,
        tx: mpsc::Sender<Result<Input>>,
        shutdown: CancellationToken,
    ) {
        let mut watching = self.watcher.is_some();
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            let ready = self.pick_ready(now);
            let has_output = ready.is_some() || self.pending_error.is_some();
            // Wake when the next candidate has settled rather than at the next
            // rescan tick, which would add up to a poll interval to every file.
            let settled_at = self.next_settled_at(now);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                () = tokio::time::sleep_until(settled_at.unwrap_or(now)), if settled_at.is_some() => {}
                event = events.recv(), if watching => match event {
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < EVENT_BUFFER {
                            match events.try_recv() {
                                Ok(event) => batch.push(event),
                                Err(_) => break,
                            }
                        }
                        self.apply_events(batch).await;
                    }
                    None => watching = false,
                },
                // The first tick fires at once: the initial scan.
                _ = tick.tick() => self.rescan().await,
                permit = tx.reserve(), if has_output => {
                    let Ok(permit) = permit else { break };
                    if let Some(error) = self.pending_error.take() {
                        permit.send(Err(error));
                    } else if let Some(path) = ready {
                        if let Some(input) = self.prepare(path).await {
                            permit.send(Ok(input));
                        }
                    }
                }
            }
        }
        tracing::debug!(dir = %self.config.dir.display(), "folder source stopped");
    }

    /// The oldest ready candidate, if any.
    fn pick_ready(&self, now: Instant) -> Option<PathBuf> {
        self.candidates
            .iter()
            .filter(|(_, c)| {
                let closed = c.closed == Some(c.stamp) && c.stamp.len > 0;
                closed || now.duration_since(c.changed_at) >= self.config.settle
            })
            .min_by(|(pa, a), (pb, b)| (a.stamp.mtime, pa).cmp(&(b.stamp.mtime, pb)))
            .map(|(p, _)| p.clone())
    }

    /// The earliest moment, after `now`, at which a waiting candidate will
    /// have been unchanged for the settle time.
    fn next_settled_at(&self, now: Instant) -> Option<Instant> {
        self.candidates
            .values()
            .map(|c| c.changed_at + self.config.settle)
            .filter(|at| *at > now)
            .min()
    }

    /// Records what a stat of `path` found.
    fn observe(&mut self, path: &Path, stamp: Option<Stamp>, now: Instant) {
        let Some(stamp) = stamp else {
            // Gone (or no longer a regular file): forget it, so that a new
            // file under this name is considered afresh.
            self.candidates.remove(path);
            self.failed.remove(path);
            lock(&self.yielded).remove(path);
            return;
        };
        if lock(&self.yielded).get(path) == Some(&stamp) {
            self.candidates.remove(path);
            return;
        }
        match self.candidates.entry(path.to_path_buf()) {
            Entry::Occupied(mut entry) => {
                let c = entry.get_mut();
                if c.stamp != stamp {
                    c.stamp = stamp;
                    c.changed_at = now;
                    c.closed = None;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Candidate {
                    stamp,
                    changed_at: now,
                    closed: None,
                });
            }
        }
    }

    /// Lists the folder and updates every candidate.
    async fn rescan(&mut self) {
        let dir = self.config.dir.clone();
        let listing = tokio::task::spawn_blocking(move || list(&dir)).await;
        let listing = match listing {
            Ok(Ok(listing)) => listing,
            Ok(Err(e)) => return self.folder_failed(e),
            Err(e) => return self.folder_failed(io::Error::other(e)),
        };
        if self.folder_error.take().is_some() {
            tracing::info!(dir = %self.config.dir.display(), "watched folder is readable again");
            // A watch dies with its directory; watch the new one.
            if let Some(watcher) = self.watcher.as_mut() {
                let _ = watcher.unwatch(&self.config.dir);
                if let Err(e) = watcher.watch(&self.config.dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %self.config.dir.display(), error = %e, "cannot watch the folder again; polling only");
                }
            }
        }
        let now = Instant::now();
        for (path, stamp) in &listing {
            match stamp {
                Ok(stamp) => self.observe(path, *stamp, now),
                // Keep what we knew; the next rescan tries again.
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot stat file"),
            }
        }
        let present: HashSet<&PathBuf> = listing.iter().map(|(path, _)| path).collect();
        // Whatever was not listed is gone.
        let gone: Vec<PathBuf> = self
            .candidates
            .keys()
            .chain(self.failed.keys())
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for path in gone {
            self.observe(&path, None, now);
        }
        lock(&self.yielded).retain(|p, _| present.contains(p));
    }

    fn folder_failed(&mut self, error: io::Error) {
        if self.folder_error == Some(error.kind()) {
            return;
        }
        tracing::warn!(dir = %self.config.dir.display(), %error, "cannot list the watched folder");
        self.folder_error = Some(error.kind());
        self.pending_error = Some(Error::Input {
            name: self.config.dir.display().to_string(),
            source: error,
        });
    }

    /// Applies a batch of watcher events, in order.
    async fn apply_events(&mut self, batch: Vec<notify::Result<Event>>) {
        let mut marks: HashMap<PathBuf, Marks> = HashMap::new();
        let mut rescan = false;
        for event in batch {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(dir = %self.config.dir.display(), error = %e, "folder watcher error; rescanning");
                    rescan = true;
                    continue;
                }
            };
            if event.need_rescan() {
                rescan = true;
            }
            #[derive(PartialEq)]
            enum Effect {
                Touch,
                CloseWrite,
                Stat,
                Ignore,
            }
            // `x.part` (or `.x`, `x.tmp`) renamed to `x` inside the folder is
            // the documented way to say "x is complete": treat it like a
            // close-after-write, so it need not wait the settle time. A file
            // moved in from elsewhere (no `From` path here) still waits.
            let renamed_into_place = matches!(
                event.kind,
                EventKind::Modify(ModifyKind::Name(RenameMode::Both))
            ) && matches!(
                event.paths.as_slice(),
                [from, _] if from.parent() == Some(self.config.dir.as_path())
                    && !is_data_file_name(from)
                    && !is_sidecar(from)
            );
            let effect = match event.kind {
                _ if renamed_into_place => Effect::CloseWrite,
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => Effect::CloseWrite,
                // Opens and reads, including our own hashing, change nothing.
                EventKind::Access(_) => Effect::Ignore,
                EventKind::Create(_) => Effect::Touch,
                EventKind::Modify(ModifyKind::Name(RenameMode::From)) => Effect::Stat,
                EventKind::Modify(_) => Effect::Touch,
                EventKind::Remove(_) | EventKind::Any | EventKind::Other => Effect::Stat,
            };
            if effect == Effect::Ignore {
                continue;
            }
            for path in event.paths {
                if path == self.config.dir {
                    // The folder itself was removed or moved.
                    rescan = true;
                    continue;
                }
                if path.parent() != Some(self.config.dir.as_path()) || !is_data_file_name(&path) {
                    continue;
                }
                let m = marks.entry(path).or_default();
                match effect {
                    Effect::Touch => {
                        m.touched = true;
                        m.closed_last = false;
                    }
                    Effect::CloseWrite => m.closed_last = true,
                    Effect::Stat | Effect::Ignore => {}
                }
            }
        }
        if !marks.is_empty() {
            let paths: Vec<PathBuf> = marks.keys().cloned().collect();
            let stamps = tokio::task::spawn_blocking(move || {
                paths
                    .into_iter()
                    .filter_map(|p| match stamp_of(&p) {
                        Ok(stamp) => Some((p, stamp)),
                        // Keep what we knew; the next rescan tries again.
                        Err(_) => None,
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            match stamps {
                Ok(stamps) => {
                    let now = Instant::now();
                    for (path, stamp) in stamps {
                        self.observe(&path, stamp, now);
                        let (Some(stamp), Some(m)) = (stamp, marks.get(&path)) else {
                            continue;
                        };
                        if let Some(c) = self.candidates.get_mut(&path) {
                            if m.touched {
                                c.changed_at = now;
                                c.closed = None;
                            }
                            if m.closed_last {
                                c.closed = Some(stamp);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stat task failed; rescanning");
                    rescan = true;
                }
            }
        }
        if rescan {
            self.rescan().await;
        }
    }

    /// Hashes a ready candidate, checking it did not change meanwhile.
    async fn prepare(&mut self, path: PathBuf) -> Option<Input> {
        let expected = self.candidates.get(&path)?.stamp;
        let default_message = self.config.default_message.clone();
        let outcome = tokio::task::spawn_blocking({
            let path = path.clone();
            move || prepare_file(&path, expected, default_message)
        })
        .await
        .unwrap_or_else(|e| {
            Prepared::Failed(Error::Input {
                name: path.display().to_string(),
                source: io::Error::other(e),
            })
        });
        let now = Instant::now();
        match outcome {
            Prepared::Ready(input) => {
                self.candidates.remove(&path);
                self.failed.remove(&path);
                lock(&self.yielded).insert(path, expected);
                Some(input)
            }
            Prepared::Changed(stamp) => {
                if stamp.is_none() {
                    tracing::warn!(path = %path.display(), "file vanished before it could be read");
                }
                self.observe(&path, stamp, now);
                if let Some(c) = self.candidates.get_mut(&path) {
                    // Something wrote it after it looked finished: start over.
                    c.changed_at = now;
                    c.closed = None;
                }
                None
            }
            Prepared::Failed(error) => {
                // Tried again when the next rescan finds it.
                self.candidates.remove(&path);
                if self.failed.insert(path.clone(), expected) == Some(expected) {
                    tracing::debug!(path = %path.display(), %error, "file still unreadable; skipped");
                } else {
                    tracing::warn!(path = %path.display(), %error, "cannot read file; skipped until the next rescan");
                }
                None
            }
        }
    }
}

/// Starts watching `dir`, sending events to `events`; `None` (polling only)
/// if that fails.
fn watch(dir: &Path, events: mpsc::Sender<notify::Result<Event>>) -> Option<RecommendedWatcher> {
    let handler = move |event: notify::Result<Event>| {
        // Never block the watcher's thread; a dropped event is found by the
        // next rescan.
        let _ = events.try_send(event);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create a folder watcher; polling only");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the folder; polling only");
        return None;
    }
    Some(watcher)
}

/// The data files in `dir` with their stamps (`None`: not a regular file).
fn list(dir: &Path) -> io::Result<Vec<(PathBuf, io::Result<Option<Stamp>>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot read a folder entry");
                continue;
            }
        };
        if is_data_file_name(&path) {
            let stamp = stamp_of(&path);
            files.push((path, stamp));
        }
    }
    Ok(files)
}

/// The stamp of a regular file (following symlinks), `None` if there is none.
fn stamp_of(path: &Path) -> io::Result<Option<Stamp>> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(Stamp::of(&meta))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a name may be a data file: not a dotfile, a temporary file or a
/// sidecar. (Directories are told apart by their metadata.)
fn is_data_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    let name = name.to_string_lossy().to_ascii_lowercase();
    !(name.starts_with('.')
        || name.ends_with(".tmp")
        || name.ends_with(".part")
        || name.ends_with(SIDECAR_SUFFIX))
}

/// Whether `path` is a `.message` sidecar.
fn is_sidecar(path: &Path) -> bool {
    path.file_name().is_some_and(|name| {
        name.to_string_lossy()
            .to_ascii_lowercase()
            .ends_with(SIDECAR_SUFFIX)
    })
}

/// `X.message` for `X`.
fn sidecar_of(path: &Path) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// The trimmed content of `path`'s sidecar, if it has one.
fn read_sidecar(path: &Path) -> io::Result<Option<String>> {
    let file = match std::fs::File::open(sidecar_of(path)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIDECAR_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SIDECAR_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {SIDECAR_SUFFIX} sidecar is larger than {MAX_SIDECAR_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {SIDECAR_SUFFIX} sidecar is not UTF-8"),
        )
    })?;
    Ok(Some(text.trim().to_owned()))
}

/// Reads the sidecar and hashes the file, if it still is the `expected`
/// version before and after.
fn prepare_file(path: &Path, expected: Stamp, default_message: Option<String>) -> Prepared {
    let input_error = |source: io::Error| Error::Input {
        name: file_name(path),
        source,
    };
    match stamp_of(path) {
        Ok(Some(stamp)) if stamp == expected => {}
        Ok(other) => return Prepared::Changed(other),
        Err(e) => return Prepared::Failed(input_error(e)),
    }
    let message = match read_sidecar(path) {
        // An empty sidecar explicitly clears the default message.
        Ok(Some(message)) => Some(message).filter(|m| !m.is_empty()),
        Ok(None) => default_message,
        Err(e) => return Prepared::Failed(input_error(e)),
    };
    let input = match Input::from_file(path, None, message) {
        Ok(input) => input,
        Err(e) => return Prepared::Failed(e),
    };
    // A change while hashing means the hash is of no version at all.
    match stamp_of(path) {
        Ok(Some(stamp)) if stamp == expected => Prepared::Ready(input),
        Ok(other) => Prepared::Changed(other),
        Err(e) => Prepared::Failed(input_error(e)),
    }
}

/// Moves `path` (then its sidecar) into `archive` if it still is the
/// `expected` version; returns whether it moved.
fn archive_file(path: &Path, archive: &Path, expected: Stamp) -> io::Result<bool> {
    match stamp_of(path)? {
        Some(stamp) if stamp == expected => {}
        _ => {
            // Replaced since it was handed over: the new file is a new job,
            // and moving it away would lose it.
            tracing::warn!(path = %path.display(), "file changed since it was handed over; not archived");
            return Ok(false);
        }
    }
    std::fs::create_dir_all(archive)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let target = free_target(archive, name)?;
    std::fs::rename(path, &target)?;
    // The data file first: a crash in between must not leave the data file
    // behind without its message, where it would be read again with another.
    let sidecar = sidecar_of(path);
    match std::fs::rename(&sidecar, sidecar_of(&target)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// `archive/name`, or `archive/stem.N.ext` with the first `N` for which
/// neither the file nor its sidecar exists.
fn free_target(archive: &Path, name: &OsStr) -> io::Result<PathBuf> {
    let taken = |p: &Path| p.symlink_metadata().is_ok() || sidecar_of(p).symlink_metadata().is_ok();
    let candidate = archive.join(name);
    if !taken(&candidate) {
        return Ok(candidate);
    }
    let as_path = Path::new(name);
    let stem = as_path.file_stem().unwrap_or(name).to_owned();
    let ext = as_path.extension().map(OsStr::to_owned);
    for n in 1..=10_000u32 {
        let mut numbered = stem.clone();
        numbered.push(format!(".{n}"));
        if let Some(ext) = &ext {
            numbered.push(".");
            numbered.push(ext);
        }
        let candidate = archive.join(numbered);
        if !taken(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name for {} in the archive", as_path.display()),
    ))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Locks a std mutex, ignoring poisoning: the maps stay consistent because
/// no code panics while holding them.
fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::model::{Format, JobId, JobMeta, JobState};

    /// Generous, for a loaded 2-core machine: only a failure waits this long.
    const YIELD_TIMEOUT: Duration = Duration::from_secs(10);

    fn fast(dir: &Path) -> FolderSourceBuilder {
        FolderSource::builder(dir)
            .settle(Duration::from_millis(300))
            .poll_interval(Duration::from_millis(100))
    }

    async fn next_input(source: &FolderSource) -> Input {
        tokio::time::timeout(YIELD_TIMEOUT, source.next())
            .await
            .expect("an input within the timeout")
            .expect("no error")
            .expect("the source is not shut down")
    }

    /// Asserts nothing is yielded for `wait` (can only pass wrongly, never
    /// fail wrongly, on a slow machine).
    async fn assert_nothing(source: &FolderSource, wait: Duration) {
        if let Ok(got) = tokio::time::timeout(wait, source.next()).await {
            panic!("expected nothing, got {got:?}");
        }
    }

    fn file_path(input: &Input) -> &Path {
        match &input.data {
            InputData::File(path) => path,
            InputData::Bytes(_) => panic!("expected a file input"),
        }
    }

    fn report() -> JobReport {
        JobReport {
            job: JobId("j".into()),
            meta: JobMeta {
                name: "f.csv".into(),
                format: Format::Csv,
                default_message: None,
                created_ms: 0,
            },
            state: JobState::Done,
            lines: 1,
            enqueued: 1,
            delivered: 1,
            dead: 0,
            in_doubt: 0,
            invalid: 0,
            duplicate: 0,
            finished_ms: Some(1),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn yields_files_present_at_start_then_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.csv"), "u1,hi\n").unwrap();
        // Building needs no runtime; here it simply runs inside one.
        let source = fast(dir.path()).build().unwrap();

        let old = next_input(&source).await;
        assert_eq!(old.name, "old.csv");
        assert_eq!(old.format, None);
        assert_eq!(file_path(&old), source.dir().join("old.csv"));

        std::fs::write(dir.path().join("new.csv"), "u2,hi\n").unwrap();
        let new = next_input(&source).await;
        assert_eq!(new.name, "new.csv");
        assert_eq!(
            new.identity,
            Input::from_file(&dir.path().join("new.csv"), None, None)
                .unwrap()
                .identity
        );
        // Each file once.
        assert_nothing(&source, Duration::from_millis(800)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_after_write_does_not_wait_for_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        let source = FolderSource::builder(dir.path())
            .settle(Duration::from_secs(3600))
            .build()
            .unwrap();
        // Start watching, then write: open, write, close.
        assert_nothing(&source, Duration::from_millis(200)).await;
        std::fs::write(dir.path().join("closed.csv"), "u1,hi\n").unwrap();
        assert_eq!(next_input(&source).await.name, "closed.csv");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rename_into_place_does_not_wait_for_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let source = FolderSource::builder(dir.path())
            .settle(Duration::from_secs(3600))
            .build()
            .unwrap();
        assert_nothing(&source, Duration::from_millis(200)).await;
        // Moved in from another folder: nothing says it is complete yet.
        std::fs::write(outside.path().join("moved.csv"), "u0,hi\n").unwrap();
        std::fs::rename(
            outside.path().join("moved.csv"),
            dir.path().join("moved.csv"),
        )
        .unwrap();
        // Written as .part and renamed into place: complete at once.
        std::fs::write(dir.path().join("users.csv.part"), "u1,hi\n").unwrap();
        std::fs::rename(
            dir.path().join("users.csv.part"),
            dir.path().join("users.csv"),
        )
        .unwrap();
        let input = tokio::time::timeout(Duration::from_secs(5), source.next())
            .await
            .expect("the renamed file within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(input.name, "users.csv");
        assert_nothing(&source, Duration::from_millis(1000)).await;
    }

    #[test]
    fn builds_outside_a_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let source = FolderSource::builder(dir.path()).build().unwrap();
        assert!(format!("{source:?}").contains("FolderSource"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ignores_temporary_hidden_and_directories_until_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("x.part"), "u1,hi\n").unwrap();
        std::fs::write(d.join("x.tmp"), "u2,hi\n").unwrap();
        std::fs::write(d.join(".hidden"), "u3,hi\n").unwrap();
        std::fs::write(d.join("lonely.message"), "hello").unwrap();
        std::fs::create_dir(d.join("sub.csv")).unwrap();
        let source = fast(d).build().unwrap();

        std::fs::write(d.join("marker.csv"), "u4,hi\n").unwrap();
        assert_eq!(next_input(&source).await.name, "marker.csv");
        assert_nothing(&source, Duration::from_millis(1000)).await;

        std::fs::rename(d.join("x.part"), d.join("x.csv")).unwrap();
        let renamed = next_input(&source).await;
        assert_eq!(renamed.name, "x.csv");
        assert_nothing(&source, Duration::from_millis(1000)).await;
    }

    /// Appends a line every 200 ms for 2 s, keeping the file open, and checks
    /// the file is handed over only after the last write, with the hash of
    /// its full content.
    async fn slow_writer_is_yielded_complete(builder: FolderSourceBuilder, dir: &Path) {
        // A settle time well above the pause between writes, so that a
        // descheduled writer does not look finished.
        let source = builder.settle(Duration::from_secs(1)).build().unwrap();
        let path = dir.join("slow.csv");
        let last_write_started = Arc::new(AtomicBool::new(false));
        let writer = std::thread::spawn({
            let path = path.clone();
            let last_write_started = Arc::clone(&last_write_started);
            move || -> io::Result<()> {
                let mut file = std::fs::File::create(&path)?;
                for i in 0..10 {
                    if i == 9 {
                        last_write_started.store(true, Ordering::SeqCst);
                    }
                    writeln!(file, "user{i},hello")?;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(())
            }
        });

        let input = next_input(&source).await;
        assert!(
            last_write_started.load(Ordering::SeqCst),
            "handed over before the last write"
        );
        writer.join().unwrap().unwrap();
        let full = Input::from_file(&path, None, None).unwrap();
        assert_eq!(input.identity, full.identity, "hash of the full content");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_writer_is_yielded_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        slow_writer_is_yielded_complete(fast(dir.path()), dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polling_alone_waits_for_slow_writer() {
        let dir = tempfile::tempdir().unwrap();
        slow_writer_is_yielded_complete(fast(dir.path()).without_watcher(), dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polling_alone_finds_files() {
        let dir = tempfile::tempdir().unwrap();
        let source = fast(dir.path()).without_watcher().build().unwrap();
        std::fs::write(dir.path().join("a.csv"), "u1,hi\n").unwrap();
        assert_eq!(next_input(&source).await.name, "a.csv");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sidecar_message_overrides_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let source = fast(d)
            .default_message(Some("default".into()))
            .build()
            .unwrap();

        // As the upload does: sidecar first, then the data file into place.
        std::fs::write(d.join("job.csv.message"), "  Outage at 5pm \n").unwrap();
        std::fs::write(d.join("job.csv.part"), "u1\nu2\n").unwrap();
        std::fs::rename(d.join("job.csv.part"), d.join("job.csv")).unwrap();
        let input = next_input(&source).await;
        assert_eq!(input.name, "job.csv");
        assert_eq!(input.default_message.as_deref(), Some("Outage at 5pm"));
        let expected =
            Input::from_file(&d.join("job.csv"), None, Some("Outage at 5pm".into())).unwrap();
        assert_eq!(input.identity, expected.identity);

        std::fs::write(d.join("plain.csv"), "u3\n").unwrap();
        let plain = next_input(&source).await;
        assert_eq!(plain.default_message.as_deref(), Some("default"));

        std::fs::write(d.join("cleared.csv.message"), " \n").unwrap();
        std::fs::write(d.join("cleared.csv"), "u4\n").unwrap();
        let cleared = next_input(&source).await;
        assert_eq!(cleared.name, "cleared.csv");
        assert_eq!(cleared.default_message, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn archive_moves_file_and_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("in");
        let archive = dir.path().join("done");
        std::fs::create_dir(&d).unwrap();
        let source = fast(&d).archive(Some(archive.clone())).build().unwrap();
        assert!(archive.is_dir(), "created by build");
        // A name already taken in the archive.
        std::fs::write(archive.join("a.csv"), "older\n").unwrap();

        std::fs::write(d.join("a.csv.message"), "hi").unwrap();
        std::fs::write(d.join("a.csv"), "u1\n").unwrap();
        let input = next_input(&source).await;
        source.finished(&input, &report()).await.unwrap();

        assert!(!d.join("a.csv").exists());
        assert!(!d.join("a.csv.message").exists());
        assert_eq!(
            std::fs::read_to_string(archive.join("a.csv")).unwrap(),
            "older\n"
        );
        assert_eq!(
            std::fs::read_to_string(archive.join("a.1.csv")).unwrap(),
            "u1\n"
        );
        assert_eq!(
            std::fs::read_to_string(archive.join("a.1.csv.message")).unwrap(),
            "hi"
        );
        // Moving it out is not a new file.
        assert_nothing(&source, Duration::from_millis(800)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replaced_file_is_not_archived_but_yielded_again() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("in");
        std::fs::create_dir(&d).unwrap();
        let source = fast(&d)
            .archive(Some(dir.path().join("done")))
            .build()
            .unwrap();
        std::fs::write(d.join("a.csv"), "u1\n").unwrap();
        let first = next_input(&source).await;

        std::fs::write(d.join("a.csv.part"), "u1\nu2\n").unwrap();
        std::fs::rename(d.join("a.csv.part"), d.join("a.csv")).unwrap();
        source.finished(&first, &report()).await.unwrap();
        assert!(d.join("a.csv").exists(), "the new version stays");

        let second = next_input(&source).await;
        assert_eq!(second.name, "a.csv");
        assert_ne!(second.identity, first.identity);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let source = fast(dir.path()).build().unwrap();
        assert_nothing(&source, Duration::from_millis(200)).await;
        source.shutdown();
        let end = tokio::time::timeout(YIELD_TIMEOUT, source.next()).await;
        assert!(matches!(end, Ok(Ok(None))), "{end:?}");
    }

    #[test]
    fn build_rejects_bad_settings() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = FolderSource::builder(&missing).build().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("does not exist")),
            "{err}"
        );
        assert!(err.to_string().contains(&missing.display().to_string()));

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = FolderSource::builder(&file).build().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("not a directory")),
            "{err}"
        );

        let err = FolderSource::builder(dir.path())
            .settle(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        let err = FolderSource::builder(dir.path())
            .archive(Some(dir.path().to_path_buf()))
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
    }

    #[test]
    fn names() {
        assert!(is_data_file_name(Path::new("/d/a.csv")));
        assert!(is_data_file_name(Path::new("/d/a")));
        for ignored in ["/d/.a", "/d/a.tmp", "/d/a.PART", "/d/a.csv.message"] {
            assert!(!is_data_file_name(Path::new(ignored)), "{ignored}");
        }
        assert_eq!(
            sidecar_of(Path::new("/d/a.csv")),
            Path::new("/d/a.csv.message")
        );
    }
}
