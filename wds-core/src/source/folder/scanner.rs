//! The folder source's background task: watches and rescans the folder,
//! feeds what it sees to the [`Tracker`], opens ready files once and hands
//! them over, and retries moving finished files out.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::files::{self, Kind};
use super::opened::{Handover, OpenedFile};
use super::scan::{is_data_file_name, is_sidecar, Ready, Signal, Tracker, Why};
use super::{Config, Outbox};
use crate::error::{Error, Result};
use crate::source::input::Input;
use crate::source::{IdentityHasher, IntakeStatus};

/// Watcher events that may wait for the scan task; more are dropped, which
/// is harmless because the periodic rescan finds what they announced.
pub(super) const EVENT_BUFFER: usize = 4096;
/// The longest pause between two tries of a listing that fails.
const MAX_LIST_BACKOFF: Duration = Duration::from_secs(5);

/// Locks a std mutex, ignoring poisoning: no code panics while holding one.
pub(super) fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The background task's state.
pub(super) struct Scanner {
    pub(super) config: Arc<Config>,
    pub(super) tracker: Arc<StdMutex<Tracker>>,
    pub(super) status: IntakeStatus,
    pub(super) outbox: Arc<Outbox>,
    pub(super) watcher: Option<RecommendedWatcher>,
    /// While the folder cannot be listed: the next try and the pause.
    pub(super) listing_backoff: Option<(Instant, Duration)>,
}

/// What the events of one batch said about a path.
#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    /// Written, created, renamed into place or had its metadata changed.
    touched: bool,
    /// The last event was a close-after-write or a rename into place.
    signal: Option<Signal>,
}

/// What came of opening a ready candidate.
#[derive(Debug)]
enum Prepared {
    Ready(Input),
    /// Not the version that was ready, or still open for writing: wait.
    NotYet(Option<Kind>, &'static str),
    /// Not a regular file (seen through the handle).
    Skipped(&'static str),
    Failed(Error),
}

impl Scanner {
    pub(super) async fn run(
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
            let ready = lock(&self.tracker).ready(now.into_std());
            // Wake when the next candidate has settled rather than at the next
            // rescan tick, which would add up to a poll interval to every file.
            let settled_at = lock(&self.tracker)
                .next_settled_at(now.into_std())
                .map(Instant::from_std);
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
                _ = tick.tick() => {
                    self.rescan().await;
                    self.outbox.retry_due(&self.status).await;
                }
                permit = tx.reserve(), if ready.is_some() => {
                    let Ok(permit) = permit else { break };
                    if let Some(input) = self.prepare(ready).await {
                        permit.send(Ok(input));
                    }
                }
            }
        }
        tracing::debug!(dir = %self.config.dir.display(), "folder source stopped");
    }

    /// Lists the folder and updates every candidate. A folder that cannot
    /// be listed is tried again with back-off, forever, and reported.
    async fn rescan(&mut self) {
        if let Some((next, _)) = self.listing_backoff {
            if Instant::now() < next {
                return;
            }
        }
        let dir = self.config.dir.clone();
        let listing = tokio::task::spawn_blocking(move || files::list(&dir)).await;
        let listing = match listing {
            Ok(Ok(listing)) => listing,
            Ok(Err(e)) => return self.folder_failed(e),
            Err(e) => return self.folder_failed(io::Error::other(e)),
        };
        if self.listing_backoff.take().is_some() {
            self.status.set_unreadable(None);
            tracing::info!(dir = %self.config.dir.display(), "watched folder is readable again");
            // A watch dies with its directory; watch the new one.
            if let Some(watcher) = self.watcher.as_mut() {
                let _ = watcher.unwatch(&self.config.dir);
                if let Err(e) = watcher.watch(&self.config.dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %self.config.dir.display(), error = %e, "cannot watch the folder again; polling only");
                }
            }
        }
        let now = Instant::now().into_std();
        let mut tracker = lock(&self.tracker);
        for (path, kind) in &listing {
            match kind {
                Ok(kind) => {
                    let stamp = self.note_kind(path, *kind);
                    tracker.observe(path, stamp, now);
                }
                // Keep what we knew; the next rescan tries again.
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot stat file"),
            }
        }
        let present: HashSet<PathBuf> = listing.into_iter().map(|(path, _)| path).collect();
        tracker.keep_only(&present);
    }

    /// Reports a non-regular entry once; the stamp of a regular file.
    fn note_kind(&self, path: &Path, kind: Option<Kind>) -> Option<super::scan::Stamp> {
        let name = files::file_name(path);
        match kind {
            Some(Kind::File(stamp)) => {
                self.status.unskip(&name);
                Some(stamp)
            }
            Some(Kind::Other(what)) => {
                if self.status.skip(&name, what) {
                    tracing::warn!(path = %path.display(), "skipped: {what}, not a regular file; only regular files are read");
                }
                None
            }
            None => {
                self.status.unskip(&name);
                None
            }
        }
    }

    fn folder_failed(&mut self, error: io::Error) {
        let reason = format!("cannot list {}: {error}", self.config.dir.display());
        if self.status.set_unreadable(Some(reason.clone())) {
            tracing::warn!(dir = %self.config.dir.display(), %error, "cannot list the watched folder; retrying");
        }
        let pause = match self.listing_backoff {
            None => self.config.poll_interval,
            Some((_, pause)) => (pause * 2).min(MAX_LIST_BACKOFF),
        };
        self.listing_backoff = Some((Instant::now() + pause, pause));
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
                Signal(Signal),
                Stat,
                Ignore,
            }
            // `x.part` (or `.x`, `x.tmp`) renamed to `x` inside the folder is
            // the documented way to say "x is complete". A file moved in
            // from elsewhere (no `From` path here) still waits.
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
                _ if renamed_into_place => Effect::Signal(Signal::Renamed),
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    Effect::Signal(Signal::Closed)
                }
                // Opens and reads, including our own, change nothing.
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
                        m.signal = None;
                    }
                    Effect::Signal(signal) => m.signal = Some(signal),
                    Effect::Stat | Effect::Ignore => {}
                }
            }
        }
        if !marks.is_empty() {
            let paths: Vec<PathBuf> = marks.keys().cloned().collect();
            let looks = tokio::task::spawn_blocking(move || {
                paths
                    .into_iter()
                    // Keep what we knew of one that fails; a rescan tries again.
                    .filter_map(|p| files::look(&p).ok().map(|kind| (p, kind)))
                    .collect::<Vec<_>>()
            })
            .await;
            match looks {
                Ok(looks) => {
                    let now = Instant::now().into_std();
                    for (path, kind) in looks {
                        let stamp = self.note_kind(&path, kind);
                        let mut tracker = lock(&self.tracker);
                        tracker.observe(&path, stamp, now);
                        let Some(m) = marks.get(&path) else { continue };
                        if m.touched {
                            tracker.touched(&path, now);
                        }
                        if let Some(signal) = m.signal {
                            tracker.signalled(&path, signal);
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

    /// Opens a ready candidate once, checks it is still the version that
    /// was ready and that nobody writes it, and hashes it through the handle.
    async fn prepare(&mut self, ready: Option<Ready>) -> Option<Input> {
        let ready = ready?;
        let config = Arc::clone(&self.config);
        let outcome = tokio::task::spawn_blocking({
            let ready = ready.clone();
            move || prepare_file(&config, &ready)
        })
        .await
        .unwrap_or_else(|e| {
            Prepared::Failed(Error::Input {
                name: ready.path.display().to_string(),
                source: io::Error::other(e),
            })
        });
        let now = Instant::now().into_std();
        let path = &ready.path;
        let mut tracker = lock(&self.tracker);
        match outcome {
            Prepared::Ready(input) => {
                tracker.claim(path, ready.stamp);
                Some(input)
            }
            Prepared::NotYet(kind, why) => {
                tracing::debug!(path = %path.display(), "not handed over yet: {why}");
                drop(tracker);
                let stamp = self.note_kind(path, kind);
                let mut tracker = lock(&self.tracker);
                tracker.observe(path, stamp, now);
                tracker.defer(path, now);
                None
            }
            Prepared::Skipped(what) => {
                drop(tracker);
                self.note_kind(path, Some(Kind::Other(what)));
                lock(&self.tracker).observe(path, None, now);
                None
            }
            Prepared::Failed(error) => {
                if tracker.unreadable(path) {
                    tracing::warn!(path = %path.display(), %error, "cannot read file; skipped until the next rescan");
                } else {
                    tracing::debug!(path = %path.display(), %error, "file still unreadable; skipped");
                }
                None
            }
        }
    }
}

/// Opens, checks and hashes `ready` (blocking).
fn prepare_file(config: &Config, ready: &Ready) -> Prepared {
    let path = &ready.path;
    let name = files::file_name(path);
    let input_error = |source: io::Error| {
        Prepared::Failed(Error::Input {
            name: name.clone(),
            source,
        })
    };
    let (file, stamp) = match files::open_regular(path) {
        Ok(Ok(opened)) => opened,
        Ok(Err(what)) => return Prepared::Skipped(what),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "file vanished before it could be opened");
            return Prepared::NotYet(None, "gone");
        }
        Err(e) => return input_error(e),
    };
    if stamp != ready.stamp {
        return Prepared::NotYet(Some(Kind::File(stamp)), "changed since it looked ready");
    }
    // A renamed file is complete by the protocol; any other one must not
    // be held open for writing by anybody.
    let renamed = ready.why == Why::Signal(Signal::Renamed);
    if !renamed {
        if let Some(pid) = files::writer_of(&stamp) {
            tracing::debug!(path = %path.display(), pid, "still open for writing");
            return Prepared::NotYet(Some(Kind::File(stamp)), "still open for writing");
        }
    }
    // A file this folder's source handed over before (an initiator
    // restarted while it still grew) keeps its job: its first bytes still
    // hash to the identity noted then.
    let note = files::read_claim_note(path)
        .filter(|n| (n.dev, n.ino) == (stamp.dev, stamp.ino) && n.len <= stamp.len);
    let noted = match note {
        Some(note) => match hash_prefix(&file, Some(note.len)) {
            Ok(hasher) => (hasher.finish(None, note.message.as_deref()) == note.identity)
                .then_some((note.identity, note.message, note.len)),
            Err(e) => return input_error(e),
        },
        None => None,
    };
    if noted.is_some() {
        tracing::info!(path = %path.display(), "handed over before (and grown since?): its job goes on");
    }
    let (identity, message, covers) = match noted {
        Some(noted) => noted,
        None => {
            let message = match files::read_sidecar(path) {
                // An empty sidecar explicitly clears the default message.
                Ok(Some(message)) => Some(message).filter(|m| !m.is_empty()),
                Ok(None) => config.default_message.clone(),
                Err(e) => return input_error(e),
            };
            let hasher = match hash_prefix(&file, None) {
                Ok(hasher) => hasher,
                Err(e) => return input_error(e),
            };
            (hasher.finish(None, message.as_deref()), message, stamp.len)
        }
    };
    // A change while hashing means the hash is of no version at all.
    let after = match file.metadata() {
        Ok(meta) => super::scan::Stamp::of(&meta),
        Err(e) => return input_error(e),
    };
    if after != stamp {
        return Prepared::NotYet(Some(Kind::File(after)), "changed while being hashed");
    }
    let note = files::ClaimNote {
        dev: stamp.dev,
        ino: stamp.ino,
        len: covers,
        message: message.clone(),
        identity: identity.clone(),
    };
    if let Err(e) = files::write_claim_note(path, &note) {
        tracing::warn!(path = %path.display(), error = %e, "cannot note the hand-over in the inbox; a restart while the file grows would make a second job");
    }
    let (quiet_since, verified) = match ready.why {
        Why::Signal(Signal::Renamed) => (ready.changed_at, true),
        Why::Settled => (ready.changed_at, true),
        Why::Signal(Signal::Closed) => (ready.changed_at, false),
    };
    let handover = Handover {
        settle: config.settle,
        quiet_since,
        verified,
        identity: identity.clone(),
        message: message.clone(),
        covers,
    };
    let opened = OpenedFile::new(file, path.clone(), stamp, handover);
    Prepared::Ready(Input::opened(
        name,
        files::read_display_name(path),
        identity,
        opened,
        message,
    ))
}

/// Hashes the first `len` bytes of `file` (all of it for `None`).
fn hash_prefix(file: &std::fs::File, len: Option<u64>) -> io::Result<IdentityHasher> {
    let mut hasher = IdentityHasher::new();
    let reader = super::opened::PositionalReader::new(file);
    let mut reader: Box<dyn io::Read> = match len {
        Some(len) => Box::new(io::Read::take(reader, len)),
        None => Box::new(reader),
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(hasher),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// Starts watching `dir`, sending events to `events`; `None` (polling only)
/// if that fails.
pub(super) fn watch(
    dir: &Path,
    events: mpsc::Sender<notify::Result<Event>>,
) -> Option<RecommendedWatcher> {
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
