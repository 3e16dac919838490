//! The receiver's output: accepted alerts appended to a CSV file, with the
//! `webhook-id`s already recorded so that repeats are dropped.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    seen: HashSet<String>,
    /// Lines written since the last flush.
    dirty: bool,
}

impl AlertLog {
    /// Opens (creating if needed) `path` for appending.
    pub(crate) fn open(path: &Path, policy: FlushPolicy) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        // No header row: the file is appended to across restarts, and every
        // line has the same two columns.
        let writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        Ok(AlertLog {
            inner: Mutex::new(Inner {
                writer,
                seen: HashSet::new(),
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

    /// Appends `user_id,alert_message` unless `id` was recorded before.
    ///
    /// The write is synchronous: it appends to the page cache (or to the CSV
    /// buffer), which takes microseconds, less than handing it to a blocking
    /// thread would.
    pub(crate) fn record(
        &self,
        id: Option<&str>,
        user_id: &str,
        alert_message: &str,
    ) -> io::Result<Recorded> {
        let mut inner = self.lock();
        if let Some(id) = id {
            if inner.seen.contains(id) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(Recorded::Duplicate);
            }
        }
        inner
            .writer
            .write_record([user_id, alert_message])
            .map_err(csv_to_io)?;
        if self.policy == FlushPolicy::EveryWrite {
            inner.writer.flush()?;
        } else {
            inner.dirty = true;
        }
        // Only remember the id once the line is written, so a failed write
        // can be retried by the sender.
        if let Some(id) = id {
            inner.seen.insert(id.to_owned());
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Recorded::Accepted)
    }

    /// Writes buffered lines to the file.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.dirty {
            inner.writer.flush()?;
            inner.dirty = false;
        }
        Ok(())
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
}

fn csv_to_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}
