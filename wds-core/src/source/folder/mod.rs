//! A [`Source`] that watches a directory and yields each file once it is
//! completely written, opened once and read through that one handle.
//!
//! See [`FolderSource`] for the rules. The parts:
//!
//! - `scan`: which files are ready, as pure functions of observed stamps,
//!   signals and time;
//! - `files`: the system calls (listing, opening without following links,
//!   the `/proc` writer check, moving files out across file systems);
//! - `opened`: the handle a job reads through, following a growing file;
//! - `scanner`: the background task tying watcher, rescans and hand-over;
//! - `outbox`: finished files moved to the archive or rejected folder.

mod files;
mod opened;
mod outbox;
mod scan;
mod scanner;

use std::fmt::{self, Debug};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

pub use opened::OpenedFile;

use super::input::{Input, InputData, Source};
use super::IntakeStatus;
use crate::error::{Error, Result};
use crate::model::{JobReport, JobState};
use outbox::Outbox;
use scan::Tracker;
use scanner::{Scanner, EVENT_BUFFER};

/// The default settle time.
const DEFAULT_SETTLE: Duration = Duration::from_millis(500);
/// The default rescan period.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Builds a [`FolderSource`].
///
/// Building needs no tokio runtime: the watcher and the background scan
/// task start on the first call to [`Source::next`].
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
///     .rejected(Some("/var/spool/wds/rejected".into()))
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
    rejected: Option<PathBuf>,
    poll_interval: Duration,
    watch: bool,
    status: IntakeStatus,
}

impl FolderSourceBuilder {
    /// How long a file's size and modification time must stay unchanged
    /// before it is handed over without a close-after-write or a rename
    /// into place (default 500 ms), and how long a job waits at the end of
    /// a file before it takes that end as final. Must not be zero.
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
    /// sidecar (default none: files stay where they are). Created if
    /// missing. On the same file system as the watched folder a file is
    /// renamed; on another it is copied through its handle, synced, and
    /// then removed from the inbox.
    pub fn archive(mut self, archive: Option<PathBuf>) -> Self {
        self.archive = archive;
        self
    }

    /// Where [`Source::finished`] moves a file whose job
    /// [failed](JobState::Failed) (rewritten, truncated, replaced or
    /// removed while being read), with the reason next to it in
    /// `NAME.reason.txt` (default none: the file stays where it is).
    /// Created if missing; moved as for [`archive`](Self::archive).
    pub fn rejected(mut self, rejected: Option<PathBuf>) -> Self {
        self.rejected = rejected;
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

    /// Where the source reports its health (default: a status of its own,
    /// see [`FolderSource::status`]). Pass the one a control API shows.
    pub fn status(mut self, status: IntakeStatus) -> Self {
        self.status = status;
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
    /// [`Error::Config`] when the folder does not exist or is not a
    /// directory, when the archive or rejected folder is the watched folder
    /// itself, or when the settle time or poll interval is zero;
    /// [`Error::Io`] (with the [`std::io::Error`] as its source) when the
    /// folder cannot be accessed, listed or resolved, or the archive or
    /// rejected folder cannot be created.
    pub fn build(self) -> Result<FolderSource> {
        let shown = self.dir.display().to_string();
        let meta = std::fs::metadata(&self.dir).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::config("folder", format!("{shown} does not exist"))
            } else {
                Error::io(format!("folder source: cannot access {shown}"), e)
            }
        })?;
        if !meta.is_dir() {
            return Err(Error::config(
                "folder",
                format!("{shown} is not a directory"),
            ));
        }
        std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("folder source: cannot list {shown}"), e))?;
        // Canonical paths make the inputs independent of the working
        // directory and let `finished` recognise our own files.
        let dir = self
            .dir
            .canonicalize()
            .map_err(|e| Error::io(format!("folder source: cannot resolve {shown}"), e))?;
        if self.settle.is_zero() {
            return Err(Error::config("settle", "must not be zero"));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::config("poll_interval", "must not be zero"));
        }
        let archive = out_folder(self.archive, "archive", &dir)?;
        let rejected = out_folder(self.rejected, "rejected", &dir)?;
        let tracker = Arc::new(StdMutex::new(Tracker::new(self.settle)));
        Ok(FolderSource {
            config: Arc::new(Config {
                dir,
                settle: self.settle,
                poll_interval: self.poll_interval,
                default_message: self.default_message,
                watch: self.watch,
            }),
            outbox: Arc::new(Outbox {
                archive,
                rejected,
                tracker: Arc::clone(&tracker),
                pending: StdMutex::new(Vec::new()),
            }),
            tracker,
            status: self.status,
            rx: Mutex::new(None),
            shutdown: CancellationToken::new(),
        })
    }
}

/// Creates and resolves a folder finished files move to.
fn out_folder(folder: Option<PathBuf>, what: &'static str, dir: &Path) -> Result<Option<PathBuf>> {
    let Some(folder) = folder else {
        return Ok(None);
    };
    let shown = folder.display().to_string();
    std::fs::create_dir_all(&folder).map_err(|e| {
        Error::io(
            format!("folder source: cannot create the {what} folder {shown}"),
            e,
        )
    })?;
    let folder = folder.canonicalize().map_err(|e| {
        Error::io(
            format!("folder source: cannot resolve the {what} folder {shown}"),
            e,
        )
    })?;
    if folder == dir {
        return Err(Error::config(
            what,
            format!("the {what} folder {shown} is the watched folder"),
        ));
    }
    Ok(Some(folder))
}

/// A [`Source`] that watches a directory and yields each file in it once it
/// is completely written.
///
/// # When a file is ready
///
/// A file is handed over only when nothing is writing it any more:
///
/// - it was renamed into place from an ignored name in the same folder
///   (`x.part`, `x.tmp` or `.x` to `x`: the way to say "written
///   completely"), as seen by the watcher, and has not changed since; or
/// - its writer closed it after writing (inotify's close-after-write, seen
///   through `notify`), it has not changed since, and no process holds it
///   open for writing; or
/// - its size and modification time (and device and inode) have not
///   changed for the *settle* time, and no process holds it open for
///   writing.
///
/// "Holds it open for writing" is known on Linux, from `/proc/*/fd` and
/// `/proc/*/fdinfo` (for the processes this one may inspect: its own
/// user's, or all for root). On other systems the settle time alone says
/// when a quiet file is complete: a writer that pauses longer than the
/// settle time there must write to a `.part` file and rename it.
///
/// An empty file always waits for the settle time, because a writer may
/// create a file, close it and only then open it again to fill it.
///
/// # One file, one job, one handle
///
/// A ready file is opened once, without following a symlink and without
/// blocking (`O_NOFOLLOW | O_NONBLOCK`), and `fstat` must say it is a
/// regular file. Its sidecar, its hash (the input's identity), every read
/// of its job and its archiving all go through that handle
/// ([`InputData::Opened`]); the path is never opened again. Symlinks,
/// FIFOs, devices, sockets and directories in the folder are skipped with
/// one warning each and listed in the [`status`](FolderSource::status).
///
/// # A file that changes after it was handed over
///
/// - **Appended to** (the same file, the bytes already read unchanged):
///   the same job goes on with the next lines. Its reader does not take the
///   end of the file as final until the file has been quiet for the settle
///   time and nobody holds it open for writing, so a shell loop of
///   `echo … >> file` or a writer that pauses makes one job with every line
///   once. (A file that was renamed into place, or found quiet for the
///   settle time and not open for writing, ends at once.)
/// - **Rewritten in place, truncated, replaced under the same name, or
///   removed (or moved away)** before it was read completely: the job ends
///   in [`JobState::Failed`] with the reason; every line read until then
///   keeps its outcome. The file (from its handle, when the name now points
///   elsewhere) goes to the [`rejected`](FolderSourceBuilder::rejected)
///   folder with `NAME.reason.txt` beside it. A file replaced under the same
///   name is, itself, a new input.
/// - Bytes appended after the job found the end (and before the file was
///   archived) are not read; the source logs an error naming how many.
/// - Each file handed over is noted in a hidden `.NAME.wds-claim` beside it
///   (device, inode, and the length and message its identity covers), until
///   it is moved out: a source started again while the file grows hands it
///   over with the noted identity, so its job resumes rather than a second
///   job repeating its first lines.
///
/// # What is ignored
///
/// Dotfiles (`.name`), `*.tmp`, `*.part` and `*.message` sidecars
/// (suffixes compared case-insensitively), until renamed into place.
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
/// Each file is yielded once per `FolderSource` (until its job finished and
/// it was moved out). Inputs carry no format (the engine detects it) and
/// their identity is the hash of the content at the moment they are handed
/// over.
///
/// # Errors
///
/// [`next`](Source::next) never fails: a folder that cannot be listed
/// (deleted, renamed away, permissions, too many open files) is tried again
/// with back-off, forever, and reported through the
/// [`status`](FolderSource::status) until it can be listed again. A file
/// that cannot be read is logged and skipped, and tried again at a later
/// rescan. Moving a finished file out is retried with back-off too.
///
/// # Cancel safety
///
/// [`next`](Source::next) is cancel safe: inputs wait in a channel filled by
/// the scan task, so dropping a `next` future loses none.
pub struct FolderSource {
    config: Arc<Config>,
    outbox: Arc<Outbox>,
    tracker: Arc<StdMutex<Tracker>>,
    status: IntakeStatus,
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
            .field("archive", &self.outbox.archive)
            .field("rejected", &self.outbox.rejected)
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
            rejected: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            watch: true,
            status: IntakeStatus::new(),
        }
    }

    /// The watched folder (canonical).
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// The intake's health: whether the folder can be listed, the entries
    /// skipped, a pending archiving error.
    pub fn status(&self) -> &IntakeStatus {
        &self.status
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
            scanner::watch(&self.config.dir, event_tx)
        } else {
            None
        };
        let scanner = Scanner {
            config: Arc::clone(&self.config),
            tracker: Arc::clone(&self.tracker),
            status: self.status.clone(),
            outbox: Arc::clone(&self.outbox),
            watcher,
            listing_backoff: None,
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

    /// Moves a file this source handed over out of the folder, through its
    /// handle: a [failed](JobState::Failed) job's file to the rejected
    /// folder with its reason, any other finished one to the archive (each
    /// only if set). A name already taken there gets a number (`x.csv`
    /// becomes `x.1.csv`). A move that fails is retried with back-off in the
    /// background (and shown in the status) rather than failing here.
    async fn finished(&self, input: &Input, report: &JobReport) -> Result<()> {
        let InputData::Opened(opened) = &input.data else {
            return Ok(());
        };
        let reason = match report.state {
            JobState::Failed => Some(
                report
                    .failure
                    .clone()
                    .unwrap_or_else(|| "the job failed".to_owned()),
            ),
            _ => None,
        };
        self.outbox
            .finish(opened.clone(), reason, &self.status)
            .await;
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

#[cfg(test)]
mod tests;
