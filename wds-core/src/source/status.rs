//! [`IntakeStatus`]: what a watching source says about its intake, for a
//! health check or a status page.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;

/// Most skipped entries kept (the oldest are dropped first).
const MAX_SKIPPED: usize = 1000;

/// The intake's health, shared between a source (which updates it) and
/// whoever shows it (the control API's `/healthz` and `/upload`). Cheap to
/// clone; clones share the state.
#[derive(Clone, Debug, Default)]
pub struct IntakeStatus {
    inner: Arc<Mutex<IntakeReport>>,
}

/// A snapshot of an [`IntakeStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct IntakeReport {
    /// Why the inbox cannot be read right now (`None`: it can). Files are
    /// not picked up meanwhile; the source keeps trying.
    pub unreadable: Option<String>,
    /// The last error moving a finished file out of the inbox, while the
    /// source keeps retrying it (`None`: none pending).
    pub archive_error: Option<String>,
    /// Entries of the inbox that are never read (symlinks, FIFOs, devices,
    /// directories), each with why.
    pub skipped: Vec<Skipped>,
}

/// An inbox entry that is not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Its name.
    pub name: String,
    /// Why (what it is).
    pub reason: String,
}

impl IntakeStatus {
    /// A status with nothing to report.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, IntakeReport> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot.
    pub fn report(&self) -> IntakeReport {
        self.lock().clone()
    }

    /// Why the inbox cannot be read, if it cannot.
    pub fn unreadable(&self) -> Option<String> {
        self.lock().unreadable.clone()
    }

    /// Records whether the inbox can be read (`None`) or why not; returns
    /// whether that changed.
    pub fn set_unreadable(&self, reason: Option<String>) -> bool {
        let mut report = self.lock();
        let changed = report.unreadable != reason;
        report.unreadable = reason;
        changed
    }

    /// Records the archiving error being retried, or `None` once it worked.
    pub fn set_archive_error(&self, error: Option<String>) {
        self.lock().archive_error = error;
    }

    /// Records an entry that is not read; returns whether it is new (so
    /// the caller warns once per entry).
    pub fn skip(&self, name: &str, reason: &str) -> bool {
        let mut report = self.lock();
        if report
            .skipped
            .iter()
            .any(|s| s.name == name && s.reason == reason)
        {
            return false;
        }
        report.skipped.retain(|s| s.name != name);
        if report.skipped.len() >= MAX_SKIPPED {
            report.skipped.remove(0);
        }
        report.skipped.push(Skipped {
            name: name.to_owned(),
            reason: reason.to_owned(),
        });
        true
    }

    /// Forgets a skipped entry (it is gone or became a regular file).
    pub fn unskip(&self, name: &str) {
        self.lock().skipped.retain(|s| s.name != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_entries_are_reported_once() {
        let status = IntakeStatus::new();
        assert!(status.skip("x.csv", "a FIFO"));
        assert!(!status.skip("x.csv", "a FIFO"));
        assert!(status.skip("x.csv", "a symbolic link"), "it changed");
        assert_eq!(status.report().skipped.len(), 1);
        status.unskip("x.csv");
        assert!(status.report().skipped.is_empty());
        assert!(status.set_unreadable(Some("gone".into())));
        assert!(!status.set_unreadable(Some("gone".into())));
        assert_eq!(status.unreadable().as_deref(), Some("gone"));
    }
}
