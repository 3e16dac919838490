//! Which files are ready to hand over: pure decisions over what was
//! observed of each file (its [`Stamp`], the watcher's signals) and the
//! time, with no filesystem access, so every rule is unit-tested.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The suffix of a sidecar file.
pub(super) const SIDECAR_SUFFIX: &str = ".message";

/// What identifies one version of a file cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) len: u64,
    pub(super) mtime: Option<SystemTime>,
    /// The file (not its name): tells a file renamed over another apart.
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl Stamp {
    /// Whether both stamps are of the same file (whatever its content).
    pub(super) fn same_file(&self, other: &Stamp) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// A sign from the watcher that a file's writer is done with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Signal {
    /// Closed after writing. A weak sign: a shell `>>` loop closes after
    /// every line, so the job reading it keeps following the file until it
    /// has been quiet for the settle time.
    Closed,
    /// Renamed into place from an ignored name (`x.part` to `x`): the
    /// documented "written completely" protocol.
    Renamed,
}

/// Why a candidate is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// A signal was seen for exactly the current stamp.
    Signal(Signal),
    /// Unchanged for the settle time.
    Settled,
}

/// A candidate that is ready, as [`Tracker::ready`] picks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ready {
    pub(super) path: PathBuf,
    pub(super) stamp: Stamp,
    pub(super) why: Why,
    /// When a change of the file was last seen.
    pub(super) changed_at: Instant,
}

/// A file seen in the folder and not handed over yet.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    stamp: Stamp,
    /// When a change was last seen (a different stamp, or a write event).
    changed_at: Instant,
    /// The last signal and the stamp it was seen for, if no write since.
    signal: Option<(Signal, Stamp)>,
}

/// The candidates of one folder and the files already handed over.
#[derive(Debug)]
pub(super) struct Tracker {
    settle: Duration,
    candidates: HashMap<PathBuf, Candidate>,
    /// Handed over and not finished, by path: the file (device, inode) its
    /// job reads through its own handle. Growth of that file is the job's
    /// business, never a new candidate.
    claimed: HashMap<PathBuf, Stamp>,
    /// Files that could not be opened, with the stamp they had: a repeated
    /// failure of the same version is not worth another warning.
    unreadable: HashMap<PathBuf, Stamp>,
}

impl Tracker {
    /// No candidates yet; files are ready after `settle` without a signal.
    pub(super) fn new(settle: Duration) -> Self {
        Tracker {
            settle,
            candidates: HashMap::new(),
            claimed: HashMap::new(),
            unreadable: HashMap::new(),
        }
    }

    /// Records what a look at `path` found: a regular file's stamp, or
    /// `None` when it is gone or not a regular file.
    pub(super) fn observe(&mut self, path: &Path, stamp: Option<Stamp>, now: Instant) {
        let Some(stamp) = stamp else {
            // Forget it, so a new file under this name is considered afresh.
            self.candidates.remove(path);
            self.unreadable.remove(path);
            self.claimed.remove(path);
            return;
        };
        match self.claimed.get(path) {
            Some(claimed) if claimed.same_file(&stamp) => {
                self.candidates.remove(path);
                return;
            }
            // Another file under a claimed name: the claimed one was
            // replaced (its job notices), and this one is new.
            Some(_) => {
                self.claimed.remove(path);
            }
            None => {}
        }
        match self.candidates.get_mut(path) {
            Some(c) if c.stamp == stamp => {}
            Some(c) => {
                c.stamp = stamp;
                c.changed_at = now;
                c.signal = None;
            }
            None => {
                self.candidates.insert(
                    path.to_path_buf(),
                    Candidate {
                        stamp,
                        changed_at: now,
                        signal: None,
                    },
                );
            }
        }
    }

    /// A write event for `path`: it changed now, whatever its stamp says.
    pub(super) fn touched(&mut self, path: &Path, now: Instant) {
        if let Some(c) = self.candidates.get_mut(path) {
            c.changed_at = now;
            c.signal = None;
        }
    }

    /// A signal for `path`, about its current stamp.
    pub(super) fn signalled(&mut self, path: &Path, signal: Signal) {
        if let Some(c) = self.candidates.get_mut(path) {
            // A rename is the stronger sign; a later close does not weaken it.
            let signal = match c.signal {
                Some((Signal::Renamed, s)) if s == c.stamp => Signal::Renamed,
                _ => signal,
            };
            c.signal = Some((signal, c.stamp));
        }
    }

    /// The oldest ready candidate, if any: one whose signal is about its
    /// current stamp (and which is not empty: a writer may create a file,
    /// close it and only then fill it), or one unchanged for the settle time.
    pub(super) fn ready(&self, now: Instant) -> Option<Ready> {
        self.candidates
            .iter()
            .filter_map(|(path, c)| {
                let why = match c.signal {
                    Some((signal, s)) if s == c.stamp && s.len > 0 => Why::Signal(signal),
                    _ if now.saturating_duration_since(c.changed_at) >= self.settle => Why::Settled,
                    _ => return None,
                };
                Some((path, c, why))
            })
            .min_by(|(pa, a, _), (pb, b, _)| (a.stamp.mtime, pa).cmp(&(b.stamp.mtime, pb)))
            .map(|(path, c, why)| Ready {
                path: path.clone(),
                stamp: c.stamp,
                why,
                changed_at: c.changed_at,
            })
    }

    /// The earliest moment after `now` at which a waiting candidate will
    /// have been unchanged for the settle time.
    pub(super) fn next_settled_at(&self, now: Instant) -> Option<Instant> {
        self.candidates
            .values()
            .map(|c| c.changed_at + self.settle)
            .filter(|at| *at > now)
            .min()
    }

    /// `path` (this version) is handed over: its job reads it from now on.
    pub(super) fn claim(&mut self, path: &Path, stamp: Stamp) {
        self.candidates.remove(path);
        self.unreadable.remove(path);
        self.claimed.insert(path.to_path_buf(), stamp);
    }

    /// `path`'s job is over (archived, rejected or given up): a file found
    /// under its name later is a new candidate.
    pub(super) fn release(&mut self, path: &Path, stamp: &Stamp) {
        if self.claimed.get(path).is_some_and(|c| c.same_file(stamp)) {
            self.claimed.remove(path);
        }
    }

    /// Not ready after all (a writer still holds it open, or it changed
    /// while being opened): wait another settle time from `now`.
    pub(super) fn defer(&mut self, path: &Path, now: Instant) {
        if let Some(c) = self.candidates.get_mut(path) {
            c.changed_at = now;
            c.signal = None;
        }
    }

    /// `path` could not be opened; it is tried again when a rescan finds
    /// it. Returns whether this version failed for the first time.
    pub(super) fn unreadable(&mut self, path: &Path) -> bool {
        let Some(c) = self.candidates.remove(path) else {
            return false;
        };
        self.unreadable.insert(path.to_path_buf(), c.stamp) != Some(c.stamp)
    }

    /// After a full listing: whatever was not listed is gone.
    pub(super) fn keep_only(&mut self, present: &HashSet<PathBuf>) {
        self.candidates.retain(|p, _| present.contains(p));
        self.unreadable.retain(|p, _| present.contains(p));
        self.claimed.retain(|p, _| present.contains(p));
    }
}

/// Whether a name may be a data file: not a dotfile, a temporary file or a
/// sidecar (suffixes compared case-insensitively).
pub(super) fn is_data_file_name(path: &Path) -> bool {
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
pub(super) fn is_sidecar(path: &Path) -> bool {
    path.file_name().is_some_and(|name| {
        name.to_string_lossy()
            .to_ascii_lowercase()
            .ends_with(SIDECAR_SUFFIX)
    })
}

/// How a job that follows a growing file decides it has reached the end:
/// the file's stamp has not changed for the settle time (counted from
/// `quiet_since`, the last change seen) and no process holds it open for
/// writing. Returns how long to wait before asking again, or `None` when
/// the end is reached.
pub(super) fn wait_at_end(
    settle: Duration,
    quiet_since: Instant,
    now: Instant,
    held_for_writing: bool,
) -> Option<Duration> {
    let quiet = now.saturating_duration_since(quiet_since);
    if quiet < settle {
        return Some(settle - quiet);
    }
    // A writer holding the file open may pause for any time: keep asking.
    held_for_writing.then_some(settle.min(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(500);

    fn stamp(len: u64, ino: u64) -> Stamp {
        Stamp {
            len,
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(len)),
            dev: 1,
            ino,
        }
    }

    fn p(name: &str) -> PathBuf {
        PathBuf::from("/in").join(name)
    }

    #[test]
    fn a_file_is_ready_after_the_settle_time_unchanged() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(&p("a"), Some(stamp(10, 1)), t0);
        assert_eq!(t.ready(t0 + SETTLE / 2), None);
        assert_eq!(t.next_settled_at(t0), Some(t0 + SETTLE));
        // It grew: the clock starts again.
        t.observe(&p("a"), Some(stamp(20, 1)), t0 + SETTLE / 2);
        assert_eq!(t.ready(t0 + SETTLE), None);
        let ready = t.ready(t0 + SETTLE / 2 + SETTLE).expect("settled");
        assert_eq!((ready.why, ready.stamp), (Why::Settled, stamp(20, 1)));
    }

    #[test]
    fn a_signal_counts_only_for_the_stamp_it_was_seen_for() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(&p("a"), Some(stamp(10, 1)), t0);
        t.signalled(&p("a"), Signal::Closed);
        assert_eq!(
            t.ready(t0).map(|r| r.why),
            Some(Why::Signal(Signal::Closed))
        );
        // Written again after the close: wait again.
        t.observe(&p("a"), Some(stamp(11, 1)), t0);
        assert_eq!(t.ready(t0), None);
        t.signalled(&p("a"), Signal::Renamed);
        t.touched(&p("a"), t0);
        assert_eq!(t.ready(t0), None, "a write after the signal cancels it");
    }

    #[test]
    fn an_empty_file_waits_for_the_settle_time_even_when_closed() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(&p("a"), Some(stamp(0, 1)), t0);
        t.signalled(&p("a"), Signal::Closed);
        assert_eq!(t.ready(t0), None);
        assert!(t.ready(t0 + SETTLE).is_some());
    }

    #[test]
    fn a_rename_is_not_weakened_by_a_later_close() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(&p("a"), Some(stamp(5, 1)), t0);
        t.signalled(&p("a"), Signal::Renamed);
        t.signalled(&p("a"), Signal::Closed);
        assert_eq!(
            t.ready(t0).map(|r| r.why),
            Some(Why::Signal(Signal::Renamed))
        );
    }

    #[test]
    fn a_claimed_file_that_grows_is_not_a_new_candidate() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(&p("a"), Some(stamp(10, 1)), t0);
        t.claim(&p("a"), stamp(10, 1));
        // Appended to: same file, new size and time. Its job follows it.
        t.observe(&p("a"), Some(stamp(30, 1)), t0 + SETTLE);
        assert_eq!(t.ready(t0 + SETTLE * 10), None);
        // Replaced by another file under the same name: that one is new.
        t.observe(&p("a"), Some(stamp(30, 2)), t0 + SETTLE * 10);
        let ready = t.ready(t0 + SETTLE * 20).expect("the new file");
        assert_eq!(ready.stamp.ino, 2);
        // The old job ending does not release the new file's name.
        t.claim(&p("a"), stamp(30, 2));
        t.release(&p("a"), &stamp(10, 1));
        t.observe(&p("a"), Some(stamp(40, 2)), t0 + SETTLE * 30);
        assert_eq!(t.ready(t0 + SETTLE * 40), None);
        t.release(&p("a"), &stamp(40, 2));
        t.observe(&p("a"), Some(stamp(40, 2)), t0 + SETTLE * 40);
        assert!(t.ready(t0 + SETTLE * 50).is_some(), "released: seen again");
    }

    #[test]
    fn the_oldest_ready_file_goes_first_and_gone_files_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(&p("new"), Some(stamp(20, 1)), t0);
        t.observe(&p("old"), Some(stamp(10, 2)), t0);
        assert_eq!(t.ready(t0 + SETTLE).map(|r| r.path), Some(p("old")));
        t.keep_only(&HashSet::from([p("new")]));
        assert_eq!(t.ready(t0 + SETTLE).map(|r| r.path), Some(p("new")));
        t.observe(&p("new"), None, t0);
        assert_eq!(t.ready(t0 + SETTLE), None);
        assert_eq!(t.next_settled_at(t0), None);
    }

    #[test]
    fn deferred_and_unreadable_files_wait() {
        let t0 = Instant::now();
        let mut t = Tracker::new(SETTLE);
        t.observe(&p("a"), Some(stamp(10, 1)), t0);
        t.signalled(&p("a"), Signal::Closed);
        t.defer(&p("a"), t0 + SETTLE);
        assert_eq!(t.ready(t0 + SETTLE), None, "deferred drops the signal");
        assert!(t.ready(t0 + SETTLE * 2).is_some());
        assert!(t.unreadable(&p("a")), "first failure");
        assert_eq!(t.ready(t0 + SETTLE * 10), None);
        t.observe(&p("a"), Some(stamp(10, 1)), t0 + SETTLE * 10);
        assert!(!t.unreadable(&p("a")), "the same version again");
    }

    #[test]
    fn the_end_of_a_followed_file_needs_quiet_and_no_writer() {
        let t0 = Instant::now();
        assert_eq!(
            wait_at_end(SETTLE, t0, t0 + SETTLE / 5, false),
            Some(SETTLE - SETTLE / 5)
        );
        assert_eq!(wait_at_end(SETTLE, t0, t0 + SETTLE, false), None);
        assert!(wait_at_end(SETTLE, t0, t0 + SETTLE * 100, true).is_some());
    }

    #[test]
    fn names() {
        assert!(is_data_file_name(Path::new("/d/a.csv")));
        assert!(is_data_file_name(Path::new("/d/a")));
        for ignored in ["/d/.a", "/d/a.tmp", "/d/a.PART", "/d/a.csv.message"] {
            assert!(!is_data_file_name(Path::new(ignored)), "{ignored}");
        }
        assert!(is_sidecar(Path::new("/d/a.csv.MESSAGE")));
    }
}
