//! The receiver's output: accepted alerts appended to a CSV file, with the
//! `webhook-id`s recorded recently so that repeats are dropped.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::seen::SeenIds;
use super::FlushPolicy;

/// What happened to one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Appended to the file.
    Accepted,
    /// Its `webhook-id` was already recorded; nothing written.
    Duplicate,
}

/// The CSV file and the ids seen, behind one lock so that "seen?" and
/// "write" are a single step: two concurrent deliveries of the same id can
/// never both be written.
#[derive(Debug)]
pub(crate) struct AlertLog {
    inner: Mutex<Inner>,
    policy: FlushPolicy,
    accepted: AtomicU64,
    duplicates: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    writer: csv::Writer<File>,
    seen: SeenIds,
    /// Lines written since the last flush.
    dirty: bool,
}

impl AlertLog {
    /// Opens (creating if needed) `path` for appending, and the log of the
    /// ids seen in the last `window` (at `ids`), dropping expired ones.
    pub(crate) fn open(
        path: &Path,
        ids: PathBuf,
        window: std::time::Duration,
        policy: FlushPolicy,
    ) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        // No header row: the file is appended to across restarts, and every
        // line has the same two columns.
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        Ok(AlertLog {
            inner: Mutex::new(Inner {
                writer,
                seen: SeenIds::open(ids, window)?,
                dirty: false,
            }),
            policy,
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another request panicked mid-write; the
        // data is still usable, and the receiver must keep answering.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `user_id,alert_message` unless `id` was recorded within the
    /// window. Cells that a spreadsheet would run as a formula are
    /// neutralised (see [`neutralise`]).
    ///
    /// The write is synchronous: it appends to the page cache (or to the CSV
    /// buffer), which takes microseconds, less than handing it to a blocking
    /// thread would.
    pub(crate) fn record(
        &self,
        id: Option<&str>,
        user_id: &str,
        alert_message: &str,
        now_ms: u64,
    ) -> io::Result<Recorded> {
        let mut inner = self.lock();
        if let Some(id) = id {
            if inner.seen.contains(id, now_ms) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(Recorded::Duplicate);
            }
        }
        inner
            .writer
            .write_record([
                neutralise(user_id).as_ref(),
                neutralise(alert_message).as_ref(),
            ])
            .map_err(csv_to_io)?;
        if self.policy == FlushPolicy::EveryWrite {
            inner.writer.flush()?;
        } else {
            inner.dirty = true;
        }
        // Only remember the id once the line is written, so a failed write
        // can be retried by the sender. The id log is written after the
        // line: a crash between the two may repeat a line after a restart,
        // never lose one.
        if let Some(id) = id {
            inner.seen.insert(id, now_ms)?;
            if self.policy == FlushPolicy::EveryWrite {
                inner.seen.flush()?;
            }
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Recorded::Accepted)
    }

    /// Writes buffered lines to the file (the CSV first, then the ids).
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.dirty {
            inner.writer.flush()?;
            inner.dirty = false;
        }
        inner.seen.flush()
    }

    /// Forgets ids older than the window, and compacts their log when most
    /// of it is expired.
    pub(crate) fn expire(&self, now_ms: u64) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.dirty {
            // The compacted id log must never run ahead of the CSV.
            inner.writer.flush()?;
            inner.dirty = false;
        }
        inner.seen.expire(now_ms)
    }

    /// How many ids are remembered now.
    pub(crate) fn remembered(&self) -> usize {
        self.lock().seen.len()
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
}

/// `cell`, with a `'` in front when it starts with a character that makes a
/// spreadsheet read it as a formula (`=`, `+`, `-`, `@`) or that some
/// spreadsheets strip before doing so (tab, carriage return): the OWASP
/// advice against CSV injection. The cell then shows as the text it was.
pub(crate) fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn csv_to_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_others_kept() {
        for (given, written) in [
            ("=1+1", "'=1+1"),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("user-1", "user-1"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(neutralise(given), written);
        }
    }
}
